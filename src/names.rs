//! Validated names: single path components (volume names live in the control protocol crate).

pub use volfs_api::VolumeName;

/// The longest file name a directory entry may have, as on ext4.
pub const NAME_MAX: usize = 255;

/// Checks that `name` is one directory entry name: not empty, not `.` or `..`, no `/` or NUL,
/// at most `NAME_MAX` bytes.
pub fn check_component(name: &[u8]) -> crate::Result<()> {
    if name.len() > NAME_MAX {
        return Err(crate::Error::NameTooLong(name.len()));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(crate::Error::Invalid(format!("{:?} is not a single file name", String::from_utf8_lossy(name))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_single_names() {
        assert!(check_component(b"file.txt").is_ok());
        assert!(check_component(&[b'x'; 255]).is_ok());
        assert!(matches!(check_component(&[b'x'; 256]), Err(crate::Error::NameTooLong(256))));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(matches!(check_component(bad), Err(crate::Error::Invalid(_))));
        }
    }
}
