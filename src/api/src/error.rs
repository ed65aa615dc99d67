//! The protocol's one error: a kind a client can act on, and a message for people.

use serde::{Deserialize, Serialize};

/// What went wrong, as far as a client needs to decide what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The volume, snapshot or mount named does not exist.
    NotFound,
    /// Something of that name exists and differs from what was asked.
    Exists,
    /// In use (mounted, open), or another operation holds it.
    Busy,
    /// The pool or the volume has no room for it.
    NoSpace,
    /// The request is malformed or names something invalid.
    Invalid,
    /// No data plane listens on the socket.
    NotRunning,
    /// The data plane did not answer in time, or the connection broke.
    Unavailable,
    /// The data plane failed (I/O error, corrupt metadata).
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::NotFound, message)
    }

    pub fn exists(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Exists, message)
    }

    pub fn busy(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Busy, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }
}
