//! How many xattrs an inode may hold, as on ext4 with its defaults (4 KiB blocks, 256-byte
//! inodes, no `ea_inode`): each xattr goes into the inode's spare room if it fits there, or
//! else into the inode's one xattr block; when neither has room, setxattr fails with ENOSPC.
//! The largest single value is thus 4040 bytes less its name, as on ext4.

/// Room for xattrs in a 256-byte inode: 256 - 128 (the base inode) - 32 (extra fields)
/// - 4 (magic) - 4 (end marker).
const IN_INODE: usize = 88;
/// Room in a 4 KiB xattr block: less its 32-byte header and 4-byte end marker.
const IN_BLOCK: usize = 4096 - 32 - 4;
/// Every xattr's fixed entry (`struct ext4_xattr_entry`).
const ENTRY: usize = 16;

/// The prefixes ext4 stores as a number instead of as part of the name. The ACL names are
/// stored whole as a number.
const PREFIXES: [&[u8]; 5] =
    [b"system.posix_acl_access", b"system.posix_acl_default", b"user.", b"trusted.", b"security."];

/// The room one xattr takes: its entry, the rest of its name and its value, each rounded up
/// to 4 bytes.
fn cost(name: &[u8], value_len: usize) -> usize {
    let rest = PREFIXES.iter().find_map(|p| name.strip_prefix(*p)).unwrap_or(name);
    ENTRY + rest.len().next_multiple_of(4) + value_len.next_multiple_of(4)
}

/// Whether xattrs with these names and value sizes fit in one inode, each placed in the inode
/// if it fits there, else in the block.
pub fn fit<'a>(xattrs: impl IntoIterator<Item = (&'a [u8], usize)>) -> bool {
    let (mut inode, mut block) = (0, 0);
    for (name, len) in xattrs {
        let c = cost(name, len);
        if inode + c <= IN_INODE {
            inode += c;
        } else if block + c <= IN_BLOCK {
            block += c;
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // The figures ext4 gives on Linux 6.x with mke2fs's defaults.
    #[test]
    fn one_value_fits_up_to_4040_bytes_with_a_short_name() {
        assert!(fit([(&b"user.x"[..], 4040)]));
        assert!(!fit([(&b"user.x"[..], 4044)]));
    }

    #[test]
    fn many_small_values_fill_the_inode_then_the_block() {
        let names: Vec<String> = (0..173).map(|n| format!("user.k{n:03}")).collect();
        let four = |k: usize| names[..k].iter().map(|n| (n.as_bytes(), 4)).collect::<Vec<_>>();
        assert!(fit(four(172)));
        assert!(!fit(four(173)));
        let hundred: Vec<String> = (0..34).map(|n| format!("user.{n}")).collect();
        assert!(fit(hundred[..33].iter().map(|n| (n.as_bytes(), 100))));
        assert!(!fit(hundred.iter().map(|n| (n.as_bytes(), 100))));
    }
}
