//! mountd's one error: each variant is the gRPC status code a CSI client receives, so the
//! mapping to codes is this file's one `match`. Data-plane errors arrive with a kind and are
//! given their code here too.

use volfs_api::{ApiError, ErrorKind};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    OutOfRange(String),
    /// Another operation on the same object is in flight, or a pagination token is stale.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The data plane is not there (yet).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// What the data plane answered.
    #[error("{0}")]
    DataPlane(#[from] ApiError),
    #[error("mountd's record store: {0}")]
    Store(String),
}

impl Error {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Aborted(_) => Code::Aborted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) | Error::Store(_) => Code::Internal,
            Error::DataPlane(e) => match e.kind {
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::Exists => Code::AlreadyExists,
                ErrorKind::Busy => Code::FailedPrecondition,
                ErrorKind::NoSpace => Code::ResourceExhausted,
                ErrorKind::Invalid => Code::InvalidArgument,
                ErrorKind::NotRunning | ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::Internal => Code::Internal,
            },
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if matches!(code, tonic::Code::Internal | tonic::Code::Unavailable) {
            tracing::warn!(error = %e, ?code, "request failed");
        } else {
            tracing::debug!(error = %e, ?code, "request refused");
        }
        tonic::Status::new(code, e.to_string())
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

macro_rules! store_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_plane_kinds_get_the_csi_code() {
        let cases = [
            (ErrorKind::NotFound, tonic::Code::NotFound),
            (ErrorKind::Exists, tonic::Code::AlreadyExists),
            (ErrorKind::Busy, tonic::Code::FailedPrecondition),
            (ErrorKind::NoSpace, tonic::Code::ResourceExhausted),
            (ErrorKind::Invalid, tonic::Code::InvalidArgument),
            (ErrorKind::NotRunning, tonic::Code::Unavailable),
        ];
        for (kind, code) in cases {
            let status = tonic::Status::from(Error::from(ApiError::new(kind, "volume v")));
            assert_eq!((status.code(), status.message()), (code, "volume v"), "{kind:?}");
        }
    }
}
