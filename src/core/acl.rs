//! POSIX ACLs as the kernel stores them in `system.posix_acl_access` and
//! `system.posix_acl_default` (`posix_acl_xattr_header` version 2, then 8-byte entries), and
//! the three rules a filesystem applies itself, as in the kernel's `fs/posix_acl.c`: the mode an
//! access ACL implies (`posix_acl_update_mode`), the ACL a new inode inherits from its parent's
//! default ACL (`posix_acl_create`), and the ACL a chmod rewrites (`posix_acl_chmod`). The
//! kernel enforces access ACLs itself: it reads them back through getxattr.

use crate::error::{Error, Result};

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;
/// The id stored in entries that name no user or group.
const UNDEFINED_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

const RWX: u16 = 0o7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A valid ACL: owner, named users, owning group, named groups, mask, other, in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// Reads and checks an ACL xattr value as the kernel does (`posix_acl_valid`).
    pub fn parse(value: &[u8]) -> Result<Acl> {
        let invalid = |why: &str| Error::Invalid(format!("POSIX ACL: {why}"));
        if value.len() < HEADER || !(value.len() - HEADER).is_multiple_of(ENTRY) {
            return Err(invalid("size is not a header and whole entries"));
        }
        if u32::from_le_bytes(value[..HEADER].try_into().expect("4 bytes")) != VERSION {
            return Err(invalid("not version 2"));
        }
        let entries: Vec<Entry> = value[HEADER..]
            .chunks_exact(ENTRY)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        // The order the entries must come in, as a small state machine.
        #[derive(Clone, Copy, PartialEq)]
        enum Next {
            UserObj,
            User,
            Group,
            Other,
            Done,
        }
        let mut next = Next::UserObj;
        let mut needs_mask = false;
        for e in &entries {
            if e.perm & !RWX != 0 {
                return Err(invalid("permissions other than rwx"));
            }
            next = match (e.tag, next) {
                (USER_OBJ, Next::UserObj) => Next::User,
                (USER, Next::User) | (GROUP, Next::Group) => {
                    needs_mask = true;
                    continue;
                }
                (GROUP_OBJ, Next::User) => Next::Group,
                (MASK, Next::Group) => Next::Other,
                (OTHER, Next::Other) => Next::Done,
                (OTHER, Next::Group) if !needs_mask => Next::Done,
                _ => return Err(invalid("entries missing, repeated or out of order")),
            };
        }
        if next != Next::Done {
            return Err(invalid("entries missing, repeated or out of order"));
        }
        Ok(Acl(entries))
    }

    /// The xattr value, with the undefined id where an entry names no one, as the kernel
    /// writes it.
    pub fn to_xattr(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + ENTRY * self.0.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            let id = if matches!(e.tag, USER | GROUP) { e.id } else { UNDEFINED_ID };
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The permission bits this access ACL gives `mode` (the mask stands for the group), and
    /// whether the mode says all it says (then no ACL need be stored).
    pub fn mode(&self, mode: u32) -> (u32, bool) {
        let mut bits = 0u32;
        let mut equivalent = true;
        for e in &self.0 {
            let perm = u32::from(e.perm & RWX);
            match e.tag {
                USER_OBJ => bits |= perm << 6,
                GROUP_OBJ => bits |= perm << 3,
                OTHER => bits |= perm,
                MASK => {
                    bits = (bits & !0o070) | (perm << 3);
                    equivalent = false;
                }
                _ => equivalent = false,
            }
        }
        ((mode & !0o777) | bits, equivalent)
    }

    /// A new inode's ACL from its parent's default ACL (`self`) and the mode asked for: each
    /// of owner, group (or mask) and other keeps only what both allow. Returns the new mode
    /// and whether the inode needs the ACL stored (it does not when the mode says it all).
    pub fn create(&mut self, mode: u32) -> (u32, bool) {
        let mut bits = mode & 0o777;
        let mut equivalent = true;
        let mut group = None;
        for (i, e) in self.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= (bits >> 6) as u16 & RWX;
                    bits &= (u32::from(e.perm) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= bits as u16 & RWX;
                    bits &= u32::from(e.perm) | !0o007;
                }
                // The mask, which comes after the owning group, stands for it.
                GROUP_OBJ => group = Some(i),
                MASK => {
                    group = Some(i);
                    equivalent = false;
                }
                _ => equivalent = false,
            }
        }
        // Parsing guarantees an owning group entry.
        let e = &mut self.0[group.expect("a valid ACL has a group entry")];
        e.perm &= (bits >> 3) as u16 & RWX;
        bits &= (u32::from(e.perm) << 3) | !0o070;
        ((mode & !0o777) | bits, !equivalent)
    }

    /// Rewrites the ACL after a chmod to `mode`: owner and other take the mode's bits, and the
    /// mask (the owning group when there is no mask) the group's.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm = ((mode >> 6) & 0o7) as u16,
                OTHER => e.perm = (mode & 0o7) as u16,
                MASK => e.perm = ((mode >> 3) & 0o7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 0o7) as u16,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    const U: u32 = UNDEFINED_ID;

    /// u::rw-,u:65534:---,g::r--,m::r--,o::r--
    fn with_named_user() -> Vec<u8> {
        acl(&[(USER_OBJ, 6, U), (USER, 0, 65534), (GROUP_OBJ, 4, U), (MASK, 4, U), (OTHER, 4, U)])
    }

    #[test]
    fn round_trips_what_the_kernel_writes() {
        let v = with_named_user();
        assert_eq!(Acl::parse(&v).unwrap().to_xattr(), v);
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        let bad = [
            b"\x02\0\0".to_vec(),
            acl(&[]),
            acl(&[(USER_OBJ, 6, U), (GROUP_OBJ, 4, U)]),
            // A named user needs a mask.
            acl(&[(USER_OBJ, 6, U), (USER, 0, 5), (GROUP_OBJ, 4, U), (OTHER, 4, U)]),
            acl(&[(GROUP_OBJ, 4, U), (USER_OBJ, 6, U), (OTHER, 4, U)]),
            acl(&[(USER_OBJ, 6, U), (USER_OBJ, 6, U), (GROUP_OBJ, 4, U), (OTHER, 4, U)]),
            acl(&[(USER_OBJ, 8, U), (GROUP_OBJ, 4, U), (OTHER, 4, U)]),
            acl(&[(USER_OBJ, 6, U), (GROUP_OBJ, 4, U), (OTHER, 4, U), (0x40, 0, U)]),
        ];
        for v in bad {
            assert!(matches!(Acl::parse(&v), Err(Error::Invalid(_))), "{v:?}");
        }
        let mut v = with_named_user();
        v[0] = 1;
        assert!(Acl::parse(&v).is_err(), "version 1");
    }

    #[test]
    fn mode_takes_the_mask_as_group() {
        let a = Acl::parse(&with_named_user()).unwrap();
        assert_eq!(a.mode(0o2777), (0o2644, false));
        let minimal = Acl::parse(&acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)])).unwrap();
        assert_eq!(minimal.mode(0o100666), (0o100750, true));
    }

    #[test]
    fn create_masks_the_default_acl_with_the_mode() {
        // d:u::rwx,d:u:1000:rwx,d:g::r-x,d:m::rwx,d:o::r-x, and open(..., 0666)
        let default = acl(&[(USER_OBJ, 7, U), (USER, 7, 1000), (GROUP_OBJ, 5, U), (MASK, 7, U), (OTHER, 5, U)]);
        let mut a = Acl::parse(&default).unwrap();
        assert_eq!(a.create(0o666), (0o664, true));
        let want = acl(&[(USER_OBJ, 6, U), (USER, 7, 1000), (GROUP_OBJ, 5, U), (MASK, 6, U), (OTHER, 4, U)]);
        assert_eq!(a.to_xattr(), want);
        // Without named entries the mode says it all.
        let mut a = Acl::parse(&acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)])).unwrap();
        assert_eq!(a.create(0o40777), (0o40750, false));
    }

    #[test]
    fn chmod_rewrites_the_mask_or_the_group() {
        let mut a = Acl::parse(&with_named_user()).unwrap();
        a.chmod(0o751);
        let want = acl(&[(USER_OBJ, 7, U), (USER, 0, 65534), (GROUP_OBJ, 4, U), (MASK, 5, U), (OTHER, 1, U)]);
        assert_eq!(a.to_xattr(), want);
        let mut a = Acl::parse(&acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)])).unwrap();
        a.chmod(0o604);
        assert_eq!(a.to_xattr(), acl(&[(USER_OBJ, 6, U), (GROUP_OBJ, 0, U), (OTHER, 4, U)]));
    }
}
