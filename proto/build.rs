//! Compiles `proto/bigfs.proto` with protox (pure Rust), so no system
//! `protoc` is needed on a fresh machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/bigfs.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
