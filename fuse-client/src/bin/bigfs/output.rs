//! Everything `bigfs` prints goes through here, so a closed pipe
//! (`bigfs admin queue | head`) ends the process the way it ends `ls`.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader is gone returns
//! EPIPE, and `println!` panics on it. Restoring SIGPIPE's default action at
//! startup, as C programs have it, is not an option here: the client writes
//! to its gRPC sockets with `writev`, which (unlike `send`) cannot be told
//! MSG_NOSIGNAL, so a storage node resetting a connection during an upload
//! would kill the CLI instead of letting it fail over. Instead every write
//! to standard output is checked, and only EPIPE *there* raises SIGPIPE.

use std::fmt;
use std::io::Write;

/// `print!` that ends the process quietly when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` that ends the process quietly when the reader has gone.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writes to standard output and flushes, so a failure is seen here.
pub fn write(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        stdout_failed(&e);
    }
}

/// A write to standard output failed: with EPIPE the reader is gone and the
/// process dies of SIGPIPE like any filter (exit status 141 in a shell, no
/// message); any other error (a full disk) is reported, exit status 1.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: signal(2) and raise(3) with valid constants; restoring the
        // default action makes the raised SIGPIPE end the process here.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    error_line(&format!("writing to standard output: {e}"));
    std::process::exit(1)
}

/// `bigfs: MESSAGE` on standard error; nothing if standard error is gone too.
pub fn error_line(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "bigfs: {message}");
}
