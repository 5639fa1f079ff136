//! How a failed command reports itself: one line on standard error and an
//! exit code. Errors about a path read like the C tools':
//! `bigfs: /x/f: No such file or directory`, naming the path the user
//! typed and the errno's usual words, never an inode number.

use std::fmt::Display;

use bigfs_client::ClientError;
use bigfs_proto::errno;

/// An error with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Exit code 1 with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Bad usage or a bad configuration file (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure {
            code: exit_code(&e),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(format!("{e:#}"))
    }
}

/// 3 when the metadata service cannot be reached, else 1.
fn exit_code(e: &ClientError) -> u8 {
    if matches!(e, ClientError::Connect { .. }) {
        3
    } else {
        1
    }
}

/// An error that may stand for a file-system errno.
pub trait PathError: Display {
    /// The errno to describe the failure with, if it has one.
    fn path_errno(&self) -> Option<i32>;
    fn exit_code(&self) -> u8 {
        1
    }
}

impl PathError for ClientError {
    fn path_errno(&self) -> Option<i32> {
        match self {
            ClientError::Remote { .. } | ClientError::UploadFailed { .. } => Some(self.errno()),
            ClientError::Io { errno, .. } => Some(*errno),
            // Invalid names the path itself; the rest are not about a file.
            _ => None,
        }
    }

    fn exit_code(&self) -> u8 {
        exit_code(self)
    }
}

impl PathError for std::io::Error {
    fn path_errno(&self) -> Option<i32> {
        self.raw_os_error()
    }
}

/// The errno a failure about `path` shows as: `PATH: WORDS`.
pub fn errno_failure(path: &str, errno: i32) -> Failure {
    Failure::new(format!("{path}: {}", errno_words(errno)))
}

/// Maps an error about `path` to `PATH: No such file or directory` (the
/// errno's words). EIO says nothing a user can act on, so an I/O error
/// keeps its own message after the path; errors without an errno (a
/// refused path, an unreachable service) keep their message alone.
pub fn at<E: PathError>(path: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| {
        let code = e.exit_code();
        let message = match e.path_errno() {
            Some(n) if n != errno::EIO => format!("{path}: {}", errno_words(n)),
            Some(_) => format!("{path}: {e}"),
            None => e.to_string(),
        };
        Failure { code, message }
    }
}

/// The C library's words for `errno`, as strerror(3) gives them.
pub fn errno_words(errno: i32) -> String {
    // std formats an OS error as "<strerror text> (os error N)".
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    match full.strip_suffix(&format!(" (os error {errno})")) {
        Some(words) => words.to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_words_are_strerrors() {
        assert_eq!(errno_words(errno::ENOENT), "No such file or directory");
        assert_eq!(errno_words(errno::ENOTEMPTY), "Directory not empty");
    }

    #[test]
    fn a_remote_error_names_the_path_and_the_errno() {
        let e = ClientError::Remote {
            op: "resolve",
            errno: errno::ENOENT,
            code: tonic::Code::NotFound,
            message: "no entry \"x\" in directory 1".into(),
        };
        assert_eq!(at("/x/f")(e).message, "/x/f: No such file or directory");
        let unreachable = ClientError::Connect {
            addr: "a:1".into(),
            message: "refused".into(),
        };
        assert_eq!(at("/x")(unreachable).code, 3);
    }
}
