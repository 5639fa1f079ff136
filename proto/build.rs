//! Compiles every `.proto` file under `proto/` with protox (pure Rust), so no
//! system `protoc` is needed on a fresh machine. All files share the
//! `bigfs` package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files: Vec<String> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    // Chunk payloads as `bytes::Bytes`: a primary forwards one buffer to
    // every replica without copying it, and decoding can share the frame.
    tonic_prost_build::configure()
        .bytes(".bigfs.PutChunkRequest.data")
        .bytes(".bigfs.GetChunkReply.data")
        .bytes(".bigfs.LayoutReply.inline_data")
        .bytes(".bigfs.CommitLayoutRequest.inline_data")
        .compile_fds(fds)?;
    Ok(())
}
