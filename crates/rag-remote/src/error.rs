//! Errors of remote generation, and how they map onto the SDK's error.

use std::time::Duration;

use rag_core::{Error, InvalidInput, Stage};

/// What went wrong talking to a generator server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The deadline had passed before the request could be sent.
    #[error("the deadline passed before the request was sent")]
    DeadlineExceeded,
    /// Connecting, sending or reading timed out.
    #[error("the generator server timed out")]
    Timeout(#[source] reqwest::Error),
    /// The server could not be reached.
    #[error("the generator server could not be reached")]
    Connect(#[source] reqwest::Error),
    /// The server answered with an error status.
    #[error("the generator server answered {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What the server's `Retry-After` asked for, if anything.
        retry_after: Option<Duration>,
        /// The start of the body (at most 200 characters).
        detail: String,
    },
    /// The response is not the OpenAI chat-completions shape, or its event stream
    /// is malformed.
    #[error("malformed response from the generator server: {0}")]
    Malformed(String),
    /// The event stream ended without `[DONE]` or a finish reason.
    #[error("the generator server closed the stream mid-answer")]
    ClosedMidStream,
    /// The response is over the size limit.
    #[error("the generator server's response is over {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Any other HTTP failure.
    #[error("HTTP request to the generator server failed")]
    Http(#[source] reqwest::Error),
    /// The client's configuration is unusable.
    #[error("invalid remote generator configuration: {0}")]
    Config(String),
}

impl RemoteError {
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            RemoteError::Timeout(e)
        } else if e.is_connect() {
            RemoteError::Connect(e)
        } else {
            RemoteError::Http(e)
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        match e {
            // The caller's request is at fault: no failover, no ejection.
            RemoteError::Status {
                status: 400 | 413 | 422,
                ref detail,
                ..
            } => Error::InvalidInput(InvalidInput::Malformed {
                what: "generation request",
                detail: detail.clone(),
            }),
            RemoteError::Config(reason) => Error::InvalidInput(InvalidInput::Config { reason }),
            RemoteError::DeadlineExceeded
            | RemoteError::Timeout(_)
            | RemoteError::Connect(_)
            | RemoteError::ClosedMidStream
            | RemoteError::Status {
                status: 408 | 429 | 502 | 503 | 504,
                ..
            } => Error::Transient {
                stage: Stage::Generate,
                source: Box::new(e),
            },
            other => Error::Backend {
                stage: Stage::Generate,
                source: Box::new(other),
            },
        }
    }
}
