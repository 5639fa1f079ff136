//! How a failed command reports itself: one line on standard error and an
//! exit code.

use bigfs_client::ClientError;

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
