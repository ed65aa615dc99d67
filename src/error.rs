//! The one error type of the filesystem core and the engines below it. Every variant maps to
//! exactly one errno in `Error::errno`, so adding a variant forces a decision about it.

use std::io;

use volfs_api::{ApiError, ErrorKind};

/// Result of every core operation.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such entry: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Exists(String),
    #[error("not a directory: {0}")]
    NotDir(String),
    #[error("is a directory: {0}")]
    IsDir(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("name too long ({0} bytes, at most 255)")]
    NameTooLong(usize),
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("cross-volume link or rename")]
    CrossVolume,
    #[error("no such attribute")]
    NoAttr,
    #[error("attribute value does not fit in {0} bytes")]
    Range(usize),
    #[error("attribute value longer than {0} bytes")]
    ValueTooLarge(usize),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("read-only: {0}")]
    ReadOnly(String),
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    TooLarge,
    #[error("not supported: {0}")]
    NotSupported(String),
    #[error("bad file handle {0}")]
    BadHandle(u64),
    #[error("busy: {0}")]
    Busy(String),
    #[error("seek beyond the end of data")]
    NoData,
    #[error("{0}: not implemented")]
    NotImplemented(&'static str),
    #[error("no such ioctl")]
    NoIoctl,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("metadata store: {0}")]
    Store(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl Error {
    /// The errno the kernel receives for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::Exists(_) => libc::EEXIST,
            Error::NotDir(_) => libc::ENOTDIR,
            Error::IsDir(_) => libc::EISDIR,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::Invalid(_) => libc::EINVAL,
            Error::NameTooLong(_) => libc::ENAMETOOLONG,
            Error::NotPermitted(_) => libc::EPERM,
            Error::CrossVolume => libc::EXDEV,
            Error::NoAttr => libc::ENODATA,
            Error::Range(_) => libc::ERANGE,
            Error::ValueTooLarge(_) => libc::E2BIG,
            Error::NoSpace(_) => libc::ENOSPC,
            Error::ReadOnly(_) => libc::EROFS,
            Error::TooManyLinks => libc::EMLINK,
            Error::TooLarge => libc::EFBIG,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::BadHandle(_) => libc::EBADF,
            Error::Busy(_) => libc::EBUSY,
            Error::NoData => libc::ENXIO,
            Error::NotImplemented(_) => libc::ENOSYS,
            Error::NoIoctl => libc::ENOTTY,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Store(_) | Error::Corrupt(_) => libc::EIO,
        }
    }

    /// What a control-protocol client is told: the kind it can act on, and the message.
    pub fn api_kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) | Error::NoAttr => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::Exists,
            Error::Busy(_) | Error::NotEmpty(_) => ErrorKind::Busy,
            Error::NoSpace(_) | Error::TooLarge => ErrorKind::NoSpace,
            Error::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => ErrorKind::NoSpace,
            Error::NotDir(_)
            | Error::IsDir(_)
            | Error::Invalid(_)
            | Error::NameTooLong(_)
            | Error::NotPermitted(_)
            | Error::CrossVolume
            | Error::Range(_)
            | Error::ValueTooLarge(_)
            | Error::ReadOnly(_)
            | Error::TooManyLinks
            | Error::NotSupported(_)
            | Error::NoData
            | Error::NotImplemented(_)
            | Error::NoIoctl => ErrorKind::Invalid,
            Error::BadHandle(_) | Error::Io(_) | Error::Store(_) | Error::Corrupt(_) => ErrorKind::Internal,
        }
    }

    /// Routine errors (a missing name, an existing one) are logged at debug; the rest at warn.
    pub fn is_routine(&self) -> bool {
        !matches!(self, Error::Io(_) | Error::Store(_) | Error::Corrupt(_))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::new(e.api_kind(), e.to_string())
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno() {
        let e = Error::from(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(!e.is_routine());
    }

    #[test]
    fn routine_errors_map_to_their_errno() {
        assert_eq!(Error::NotFound("x".into()).errno(), libc::ENOENT);
        assert_eq!(Error::NameTooLong(300).errno(), libc::ENAMETOOLONG);
        assert_eq!(Error::CrossVolume.errno(), libc::EXDEV);
        assert!(Error::Exists("x".into()).is_routine());
    }

    #[test]
    fn clients_get_a_kind_they_can_act_on() {
        let e = ApiError::from(Error::Exists("volume a".into()));
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::Exists, "already exists: volume a"));
        assert_eq!(Error::from(io::Error::from_raw_os_error(libc::ENOSPC)).api_kind(), ErrorKind::NoSpace);
        assert_eq!(Error::Busy("x".into()).api_kind(), ErrorKind::Busy);
    }
}
