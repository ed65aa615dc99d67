//! The one error type of the filesystem core and the engines below it. Every variant maps to
//! exactly one errno in `Error::errno`, so adding a variant forces a decision about it.

use std::io;

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
            Error::NoSpace(_) => libc::ENOSPC,
            Error::ReadOnly(_) => libc::EROFS,
            Error::TooManyLinks => libc::EMLINK,
            Error::TooLarge => libc::EFBIG,
            Error::NotSupported(_) => libc::EOPNOTSUPP,
            Error::BadHandle(_) => libc::EBADF,
            Error::Busy(_) => libc::EBUSY,
            Error::NoData => libc::ENXIO,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Store(_) | Error::Corrupt(_) => libc::EIO,
        }
    }

    /// Routine errors (a missing name, an existing one) are logged at debug; the rest at warn.
    pub fn is_routine(&self) -> bool {
        !matches!(self, Error::Io(_) | Error::Store(_) | Error::Corrupt(_))
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Store(e.to_string())
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
}
