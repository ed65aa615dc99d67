//! Extended attributes: set, get, list and remove, with the kernel's name rules, ACLs kept in
//! step with the mode (`acl`), and as many xattrs per inode as ext4 holds with its defaults
//! (4 KiB blocks, 256-byte inodes, no `ea_inode`): each xattr goes into the inode's spare room
//! if it fits there, or else into the inode's one xattr block; when neither has room, setxattr
//! fails with ENOSPC. The largest single value is thus 4040 bytes less its name, as on ext4.

use super::acl::{self, Acl};
use super::{lossy, Core, XattrMode};
use crate::error::{Error, Result};
use crate::meta::{Ino, Inode, Kind, Timestamp, Txn};

/// The largest xattr value the kernel passes (XATTR_SIZE_MAX).
const XATTR_SIZE_MAX: usize = 65_536;

impl Core {
    /// Sets an xattr. `kill_sgid`: an access ACL set here also clears setgid, as the kernel
    /// asks when the caller is neither in the file's group nor privileged.
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], mode: XattrMode, kill_sgid: bool) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::ValueTooLarge(XATTR_SIZE_MAX));
        }
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        let stored = if name == acl::ACCESS || name == acl::DEFAULT {
            // As in the kernel, an ACL is set whatever the flags say.
            let stored = self.acl_to_store(ino, &mut inode, name, value)?;
            if kill_sgid && name == acl::ACCESS {
                inode.perm &= !libc::S_ISGID;
            }
            stored
        } else {
            let exists = self.meta.xattr(ino, name)?.is_some();
            match (mode, exists) {
                (XattrMode::Create, true) => return Err(Error::Exists(lossy(name))),
                (XattrMode::Replace, false) => return Err(Error::NoAttr),
                _ => {}
            }
            Some(value.to_vec())
        };
        let mut txn = Txn::default();
        match stored {
            Some(value) => {
                self.check_xattr_room(ino, name, value.len())?;
                txn.put_xattr(ino, name, &value);
            }
            // An ACL the mode says all of: nothing stored, and no delete recorded where
            // nothing was (`cp -a` sets one on every file it copies).
            None if self.meta.xattr(ino, name)?.is_some() => txn.delete_xattr(ino, name),
            None => {}
        }
        inode.ctime = Timestamp::now();
        txn.put_inode(ino, &inode);
        self.meta.commit(txn)
    }

    /// Fails with ENOSPC when the inode's xattrs, with `name` holding `len` bytes, would not
    /// fit in an ext4 inode.
    fn check_xattr_room(&self, ino: Ino, name: &[u8], len: usize) -> Result<()> {
        let mut sizes = Vec::new();
        for other in self.meta.xattr_names(ino)?.into_iter().filter(|n| n != name) {
            let size = self.meta.xattr(ino, &other)?.map_or(0, |v| v.len());
            sizes.push((other, size));
        }
        sizes.push((name.to_vec(), len));
        sizes.sort();
        if !fit(sizes.iter().map(|(n, l)| (n.as_slice(), *l))) {
            return Err(Error::NoSpace(format!(
                "inode {} has no room for {} bytes in xattr {}",
                ino.0,
                len,
                lossy(name)
            )));
        }
        Ok(())
    }

    /// The value to store for an access or default ACL (None: remove it). An access ACL sets
    /// the mode's permission bits, and is not stored when the mode says all it says
    /// (posix_acl_update_mode).
    fn acl_to_store(&self, ino: Ino, inode: &mut Inode, name: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        match inode.kind {
            Kind::Symlink => return Err(Error::NotSupported("ACLs on a symbolic link".into())),
            Kind::Dir => {}
            _ if name == acl::DEFAULT => {
                return Err(Error::Invalid(format!("inode {} is not a directory; only they have default ACLs", ino.0)))
            }
            _ => {}
        }
        let parsed = Acl::parse(value)?;
        if name == acl::DEFAULT {
            return Ok(Some(parsed.to_xattr()));
        }
        let (mode, equivalent) = parsed.mode(inode.perm);
        inode.perm = mode;
        Ok((!equivalent).then(|| parsed.to_xattr()))
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        self.inode(ino)?;
        self.meta.xattr(ino, name)?.ok_or(Error::NoAttr)
    }

    /// The names of every xattr, each followed by NUL, as listxattr returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        self.inode(ino)?;
        let mut out = Vec::new();
        for name in self.meta.xattr_names(ino)? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        check_xattr_name(name)?;
        let _w = self.lock();
        let mut inode = self.inode(ino)?;
        if self.meta.xattr(ino, name)?.is_none() {
            // Removing an ACL there is not is no error, as on ext4: the mode stands alone.
            if name == acl::ACCESS || name == acl::DEFAULT {
                return Ok(());
            }
            return Err(Error::NoAttr);
        }
        inode.ctime = Timestamp::now();
        let mut txn = Txn::default();
        txn.delete_xattr(ino, name);
        txn.put_inode(ino, &inode);
        self.meta.commit(txn)
    }
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::Invalid("empty xattr name".into()));
    }
    if name.len() > 255 {
        return Err(Error::Range(255));
    }
    const NAMESPACES: [&[u8]; 4] = [b"user.", b"trusted.", b"security.", b"system."];
    if !NAMESPACES.iter().any(|ns| name.starts_with(ns) && name.len() > ns.len()) {
        return Err(Error::NotSupported(format!("xattr namespace of {:?}", lossy(name))));
    }
    Ok(())
}

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
fn fit<'a>(xattrs: impl IntoIterator<Item = (&'a [u8], usize)>) -> bool {
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
