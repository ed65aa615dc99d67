//! Filesystem core tests over a temporary pool, without FUSE: each operation's results and
//! errors (as errnos), link counts, setgid inheritance, timestamps, unlink-while-open,
//! persistence across a close and reopen, recovery after an unclean stop, fsck, volume
//! deletion and readdir offsets.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use volfs::core::{Attr, Caller, Core, NodeSpec, Opened, RenameMode, SetAttr, TimeSet, XattrMode};
use volfs::fsck::{self, FsckReport};
use volfs::meta::{DataId, Ino, Kind, Volume};
use volfs::names::VolumeName;
use volfs::pool::{OpenMode, Pool};

const USER: Caller = Caller { uid: 1000, gid: 1000, umask: 0 };

/// A pool in a temporary directory with one volume, `v`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pool: Pool,
    vol: Volume,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let pool = Pool::open(&dir, OpenMode::CreateIfMissing).unwrap();
        let vol = pool.create_volume(&VolumeName::parse("v").unwrap(), 0, None).unwrap();
        Fixture { _tmp: tmp, dir, pool, vol }
    }

    fn core(&self) -> &Core {
        self.pool.core()
    }

    fn root(&self) -> Ino {
        self.vol.root
    }

    /// Closes the pool in order and opens it again.
    fn reopen(self) -> Fixture {
        let Fixture { _tmp, dir, pool, vol } = self;
        drop(pool);
        let pool = Pool::open(&dir, OpenMode::Existing).unwrap();
        let vol = pool.volume(&vol.name).unwrap();
        Fixture { _tmp, dir, pool, vol }
    }

    fn fsck(&self) -> FsckReport {
        fsck::check(&self.pool, false, true).unwrap()
    }

    fn assert_clean(&self) {
        let report = self.fsck();
        assert!(report.problems.is_empty(), "fsck problems: {:#?}", report.problems);
    }

    fn file(&self, parent: Ino, name: &str) -> Ino {
        self.core().make_node(USER, parent, name.as_bytes(), NodeSpec::File, 0o644).unwrap().ino
    }

    fn dir(&self, parent: Ino, name: &str) -> Ino {
        self.core().make_node(USER, parent, name.as_bytes(), NodeSpec::Dir, 0o755).unwrap().ino
    }

    fn attr(&self, ino: Ino) -> Attr {
        self.core().getattr(ino).unwrap()
    }

    fn nlink(&self, ino: Ino) -> u32 {
        self.attr(ino).nlink
    }

    fn lookup(&self, parent: Ino, name: &str) -> Ino {
        self.core().lookup(parent, name.as_bytes()).unwrap().ino
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8]) {
        let f = self.core().open(ino).unwrap();
        assert_eq!(self.core().write(&f, offset, data).unwrap() as usize, data.len());
        self.core().release(ino).unwrap();
    }

    fn read(&self, ino: Ino) -> Vec<u8> {
        let f = self.core().open(ino).unwrap();
        let data = self.core().read(&f, 0, 1 << 20).unwrap();
        self.core().release(ino).unwrap();
        data
    }

    /// Names in `dir` (without `.` and `..`), in readdir order.
    fn names(&self, dir: Ino) -> Vec<String> {
        readdir_all(self.core(), dir, 0).into_iter().map(|(_, name)| name).filter(|n| n != "." && n != "..").collect()
    }

    /// Whether a data file exists.
    fn data_exists(&self, id: DataId) -> bool {
        self.core().data().path(id).exists()
    }

    fn data_id(&self, ino: Ino) -> DataId {
        self.core().meta().inode(ino).unwrap().unwrap().data.expect("regular file has a data file")
    }
}

/// Every entry of `dir` after `offset`, as (offset, name), following readdir's batches.
fn readdir_all(core: &Core, dir: Ino, mut offset: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let batch = core.readdir(dir, offset).unwrap();
        let Some(last) = batch.last() else { return out };
        offset = last.offset;
        out.extend(batch.into_iter().map(|e| (e.offset, String::from_utf8(e.name).unwrap())));
    }
}

/// The errno of a result that must be an error.
fn errno<T: Debug>(result: volfs::Result<T>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

fn pool_errno(result: volfs::Result<Pool>) -> i32 {
    match result {
        Ok(_) => panic!("expected an error, got a pool"),
        Err(e) => e.errno(),
    }
}

fn pause() {
    // Longer than a tick of the kernel's coarse clock, which stamps the data files.
    sleep(Duration::from_millis(30));
}

fn set_mode(mode: u32) -> SetAttr {
    SetAttr { mode: Some(mode), ..SetAttr::default() }
}

// ---------------------------------------------------------------------------------------------
// Creating and looking up
// ---------------------------------------------------------------------------------------------

#[test]
fn make_node_creates_each_kind_with_the_callers_ownership() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();

    let (f, opened) = core.create(USER, root, b"f", 0o640, |_| None::<()>).unwrap();
    assert_eq!(core.write(&opened.file, 0, b"hello").unwrap(), 5);
    core.close(&opened.file, false).unwrap();
    assert_eq!((f.kind, f.perm, f.nlink, f.uid, f.gid, f.size), (Kind::File, 0o640, 1, 1000, 1000, 0));
    assert_eq!(fx.attr(f.ino).size, 5);

    let d = core.make_node(USER, root, b"d", NodeSpec::Dir, 0o750).unwrap();
    assert_eq!((d.kind, d.perm, d.nlink), (Kind::Dir, 0o750, 2));

    let s = core.make_node(USER, root, b"s", NodeSpec::Symlink(b"../target".to_vec()), 0o777).unwrap();
    assert_eq!((s.kind, s.size), (Kind::Symlink, 9));
    assert_eq!(core.readlink(s.ino).unwrap(), b"../target");

    let p = core.make_node(USER, root, b"p", NodeSpec::Special(Kind::Fifo, 0), 0o600).unwrap();
    assert_eq!(p.kind, Kind::Fifo);
    let c = core.make_node(USER, root, b"c", NodeSpec::Special(Kind::CharDev, 0x0103), 0o600).unwrap();
    assert_eq!((c.kind, c.rdev), (Kind::CharDev, 0x0103));

    // Type bits and anything above 07777 are not permission bits.
    let m = core.make_node(USER, root, b"m", NodeSpec::Dir, libc::S_IFDIR | 0o1777).unwrap();
    assert_eq!(m.perm, 0o1777);

    for (name, ino) in [("f", f.ino), ("d", d.ino), ("s", s.ino), ("p", p.ino), ("c", c.ino), ("m", m.ino)] {
        assert_eq!(fx.lookup(root, name), ino);
        assert_eq!(fx.attr(ino), core.lookup(root, name.as_bytes()).unwrap());
    }
    assert_eq!(fx.names(root), ["f", "d", "s", "p", "c", "m"]);
    assert_eq!(fx.nlink(root), 4);
    fx.assert_clean();
}

#[test]
fn make_node_errors() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    fx.dir(root, "d");

    for spec in [NodeSpec::File, NodeSpec::Dir, NodeSpec::Symlink(b"x".to_vec())] {
        assert_eq!(errno(core.make_node(USER, root, b"f", spec.clone(), 0o644)), libc::EEXIST);
        assert_eq!(errno(core.make_node(USER, root, b"d", spec.clone(), 0o644)), libc::EEXIST);
        assert_eq!(errno(core.make_node(USER, f, b"x", spec.clone(), 0o644)), libc::ENOTDIR);
        assert_eq!(errno(core.make_node(USER, Ino(999_999), b"x", spec.clone(), 0o644)), libc::ENOENT);
        assert_eq!(errno(core.make_node(USER, root, &[b'n'; 256], spec.clone(), 0o644)), libc::ENAMETOOLONG);
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(errno(core.make_node(USER, root, bad, spec.clone(), 0o644)), libc::EINVAL, "{bad:?}");
        }
    }
    // The longest name that fits.
    let long = "n".repeat(255);
    fx.file(root, &long);
    assert_eq!(fx.names(root), ["f", "d", long.as_str()]);
    fx.assert_clean();
}

#[test]
fn lookup_errors() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    assert_eq!(errno(core.lookup(root, b"missing")), libc::ENOENT);
    assert_eq!(errno(core.lookup(f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(core.lookup(Ino(999_999), b"x")), libc::ENOENT);
    assert_eq!(errno(core.lookup(root, &[b'n'; 256])), libc::ENAMETOOLONG);
    assert_eq!(errno(core.lookup(root, b"a/b")), libc::EINVAL);
    assert_eq!(errno(core.getattr(Ino(999_999))), libc::ENOENT);
    assert_eq!(errno(core.readlink(f)), libc::EINVAL);
    assert_eq!(errno(core.readdir(f, 0)), libc::ENOTDIR);
}

#[test]
fn open_read_write_and_truncate() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    let d = fx.dir(root, "d");
    let s = core.make_node(USER, root, b"s", NodeSpec::Symlink(b"f".to_vec()), 0o777).unwrap();

    fx.write(f, 0, b"hello world");
    // A write past the end leaves a hole that reads as zeros.
    fx.write(f, 20, b"!");
    let mut want = b"hello world".to_vec();
    want.resize(20, 0);
    want.push(b'!');
    assert_eq!(fx.read(f), want);
    assert_eq!(fx.attr(f).size, 21);

    let file = core.open(f).unwrap();
    assert_eq!(core.read(&file, 6, 5).unwrap(), b"world");
    assert_eq!(core.read(&file, 100, 5).unwrap(), b"");
    core.release(f).unwrap();

    let a = core.setattr(f, &SetAttr { size: Some(5), ..SetAttr::default() }, None).unwrap();
    assert_eq!(a.size, 5);
    assert_eq!(fx.read(f), b"hello");
    let a = core.setattr(f, &SetAttr { size: Some(8), ..SetAttr::default() }, None).unwrap();
    assert_eq!(a.size, 8);
    assert_eq!(fx.read(f), b"hello\0\0\0");
    // Truncating through an open file.
    let file = core.open(f).unwrap();
    core.setattr(f, &SetAttr { size: Some(2), ..SetAttr::default() }, Some(&file)).unwrap();
    core.release(f).unwrap();
    assert_eq!(fx.read(f), b"he");

    assert_eq!(errno(core.open(d)), libc::EISDIR);
    assert_eq!(errno(core.open(s.ino)), libc::EINVAL);
    assert_eq!(errno(core.open(Ino(999_999))), libc::ENOENT);
    let trunc = SetAttr { size: Some(0), ..SetAttr::default() };
    assert_eq!(errno(core.setattr(d, &trunc, None)), libc::EISDIR);
    assert_eq!(errno(core.setattr(s.ino, &trunc, None)), libc::EINVAL);
    assert_eq!(errno(core.setattr(Ino(999_999), &trunc, None)), libc::ENOENT);
    fx.assert_clean();
}

#[test]
fn fsync_fallocate_lseek_and_copy_file_range() {
    let fx = Fixture::new();
    let core = fx.core();
    let f = fx.file(fx.root(), "f");
    let g = fx.file(fx.root(), "g");
    let file = core.open(f).unwrap();
    core.write(&file, 0, b"0123456789").unwrap();
    core.fsync(&file, false).unwrap();
    core.fsync(&file, true).unwrap();
    core.sync_metadata().unwrap();

    core.fallocate(&file, 0, 8192, 0).unwrap();
    assert_eq!(fx.attr(f).size, 8192);
    core.fallocate(&file, 8192, 4096, libc::FALLOC_FL_KEEP_SIZE).unwrap();
    assert_eq!(fx.attr(f).size, 8192);
    assert_eq!(errno(core.fallocate(&file, u64::MAX, 1, 0)), libc::EFBIG);
    assert_eq!(errno(core.fallocate(&file, 0, 0, 0)), libc::EINVAL);

    assert_eq!(core.lseek(&file, 0, libc::SEEK_END).unwrap(), 8192);
    assert_eq!(core.lseek(&file, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(errno(core.lseek(&file, 9000, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(errno(core.lseek(&file, -1, libc::SEEK_SET)), libc::EINVAL);

    let dst = core.open(g).unwrap();
    assert_eq!(core.copy_file_range(&file, 2, &dst, 1, 4).unwrap(), 4);
    assert_eq!(fx.read(g), [&b"\0"[..], b"2345"].concat());
    assert_eq!(errno(core.copy_file_range(&file, u64::MAX, &dst, 0, 1)), libc::EFBIG);
    drop((file, dst));
    core.release(f).unwrap();
    core.release(g).unwrap();
    fx.assert_clean();
}

#[test]
fn setattr_changes_mode_owner_and_times() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    let d = fx.dir(root, "d");
    for ino in [f, d] {
        let a = core.setattr(ino, &set_mode(libc::S_IFREG | 0o4711), None).unwrap();
        assert_eq!(a.perm, 0o4711);
        let a = core.setattr(ino, &SetAttr { uid: Some(7), gid: Some(8), ..SetAttr::default() }, None).unwrap();
        // A chown clears a file's setuid, not a directory's.
        assert_eq!((a.uid, a.gid, a.perm), (7, 8, if ino == f { 0o711 } else { 0o4711 }));
        let when = SystemTime::UNIX_EPOCH + Duration::new(1_000_000, 123_456_789);
        let later = SystemTime::UNIX_EPOCH + Duration::new(2_000_000, 5);
        let set = SetAttr {
            atime: Some(TimeSet::At(when.into())),
            mtime: Some(TimeSet::At(later.into())),
            ..SetAttr::default()
        };
        let a = core.setattr(ino, &set, None).unwrap();
        assert_eq!((a.atime, a.mtime), (when, later));
        assert_eq!((fx.attr(ino).atime, fx.attr(ino).mtime), (when, later));
        // Only the mtime: the atime stays.
        let set = SetAttr { mtime: Some(TimeSet::At(when.into())), ..SetAttr::default() };
        let a = core.setattr(ino, &set, None).unwrap();
        assert_eq!((a.atime, a.mtime), (when, when));
        let before = SystemTime::now();
        let set = SetAttr { mtime: Some(TimeSet::Now), ..SetAttr::default() };
        let a = core.setattr(ino, &set, None).unwrap();
        assert!(a.mtime + Duration::from_millis(20) >= before, "mtime {:?} before {before:?}", a.mtime);
        // Times before the epoch survive too.
        let ancient = SystemTime::UNIX_EPOCH - Duration::new(100, 250);
        let set = SetAttr { mtime: Some(TimeSet::At(ancient.into())), ..SetAttr::default() };
        assert_eq!(core.setattr(ino, &set, None).unwrap().mtime, ancient);
    }
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Removing
// ---------------------------------------------------------------------------------------------

#[test]
fn unlink_removes_a_name_and_the_file_with_its_last_one() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let f = fx.file(root, "f");
    fx.write(f, 0, b"data");
    let id = fx.data_id(f);
    core.link(f, d, b"g").unwrap();
    assert_eq!(fx.nlink(f), 2);

    assert_eq!(errno(core.unlink(root, b"missing")), libc::ENOENT);
    assert_eq!(errno(core.unlink(root, b"d")), libc::EISDIR);
    assert_eq!(errno(core.unlink(f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(core.unlink(root, &[b'n'; 256])), libc::ENAMETOOLONG);

    core.unlink(root, b"f").unwrap();
    assert_eq!(errno(core.lookup(root, b"f")), libc::ENOENT);
    assert_eq!(fx.nlink(f), 1);
    assert_eq!(fx.read(fx.lookup(d, "g")), b"data");
    fx.assert_clean();

    core.unlink(d, b"g").unwrap();
    assert_eq!(errno(core.getattr(f)), libc::ENOENT);
    assert!(!fx.data_exists(id), "the data file goes with the last link");
    assert!(fx.names(root) == ["d"] && fx.names(d).is_empty());
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

#[test]
fn rmdir_removes_empty_directories_only() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let e = fx.dir(d, "e");
    fx.file(root, "f");
    core.setxattr(e, b"user.k", b"v", XattrMode::Any, false).unwrap();

    assert_eq!(errno(core.rmdir(root, b"missing")), libc::ENOENT);
    assert_eq!(errno(core.rmdir(root, b"f")), libc::ENOTDIR);
    assert_eq!(errno(core.rmdir(root, b"d")), libc::ENOTEMPTY);
    assert_eq!(errno(core.rmdir(e, b".")), libc::EINVAL);
    assert_eq!(fx.nlink(root), 3);
    assert_eq!(fx.nlink(d), 3);

    core.rmdir(d, b"e").unwrap();
    assert_eq!(fx.nlink(d), 2);
    assert_eq!(errno(core.getattr(e)), libc::ENOENT);
    assert_eq!(errno(core.listxattr(e)), libc::ENOENT);
    core.rmdir(root, b"d").unwrap();
    assert_eq!(fx.nlink(root), 2);
    assert_eq!(errno(core.make_node(USER, d, b"x", NodeSpec::File, 0o644)), libc::ENOENT);
    assert_eq!(fx.names(root), ["f"]);
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Links and renames
// ---------------------------------------------------------------------------------------------

#[test]
fn link_adds_names_to_one_inode() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let f = fx.file(root, "f");
    fx.write(f, 0, b"shared");

    let a = core.link(f, d, b"g").unwrap();
    assert_eq!((a.ino, a.nlink), (f, 2));
    let a = core.link(f, root, b"h").unwrap();
    assert_eq!(a.nlink, 3);
    assert_eq!(fx.lookup(d, "g"), f);
    fx.write(fx.lookup(root, "h"), 6, b"!");
    assert_eq!(fx.read(fx.lookup(d, "g")), b"shared!");

    assert_eq!(errno(core.link(d, root, b"dd")), libc::EPERM);
    assert_eq!(errno(core.link(f, root, b"d")), libc::EEXIST);
    assert_eq!(errno(core.link(f, root, b"h")), libc::EEXIST);
    assert_eq!(errno(core.link(f, Ino(999_999), b"x")), libc::ENOENT);
    assert_eq!(errno(core.link(Ino(999_999), root, b"x")), libc::ENOENT);
    assert_eq!(errno(core.link(f, f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(core.link(f, root, &[b'n'; 256])), libc::ENAMETOOLONG);
    assert_eq!(errno(core.link(f, root, b"..")), libc::EINVAL);
    let s = core.make_node(USER, root, b"s", NodeSpec::Symlink(b"f".to_vec()), 0o777).unwrap();
    assert_eq!(core.link(s.ino, d, b"s2").unwrap().nlink, 2);
    assert_eq!(fx.names(d), ["g", "s2"]);
    fx.assert_clean();
}

#[test]
fn links_and_renames_do_not_cross_volumes() {
    let fx = Fixture::new();
    let core = fx.core();
    let other = fx.pool.create_volume(&VolumeName::parse("other").unwrap(), 0, None).unwrap();
    let f = fx.file(fx.root(), "f");
    fx.dir(fx.root(), "d");
    fx.file(other.root, "g");
    assert_eq!(errno(core.link(f, other.root, b"f")), libc::EXDEV);
    for mode in [RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange] {
        assert_eq!(errno(core.rename(fx.root(), b"f", other.root, b"f", mode)), libc::EXDEV);
        assert_eq!(errno(core.rename(fx.root(), b"d", other.root, b"g", mode)), libc::EXDEV);
    }
    assert_eq!(fx.names(fx.root()), ["f", "d"]);
    assert_eq!(fx.names(other.root), ["g"]);
    fx.assert_clean();
}

#[test]
fn link_to_an_unlinked_open_file_fails() {
    let fx = Fixture::new();
    let core = fx.core();
    let f = fx.file(fx.root(), "f");
    let _file = core.open(f).unwrap();
    core.unlink(fx.root(), b"f").unwrap();
    assert_eq!(errno(core.link(f, fx.root(), b"back")), libc::ENOENT);
    core.release(f).unwrap();
    fx.assert_clean();
}

#[test]
fn rename_moves_and_replaces() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let f = fx.file(root, "f");
    fx.write(f, 0, b"f");
    let g = fx.file(d, "g");
    fx.write(g, 0, b"g");
    let g_data = fx.data_id(g);

    // Plain move into another directory.
    core.rename(root, b"f", d, b"f2", RenameMode::Replace).unwrap();
    assert_eq!(errno(core.lookup(root, b"f")), libc::ENOENT);
    assert_eq!(fx.lookup(d, "f2"), f);

    // Replace: the target's inode and data file go.
    core.rename(d, b"f2", d, b"g", RenameMode::Replace).unwrap();
    assert_eq!(fx.lookup(d, "g"), f);
    assert_eq!(fx.read(f), b"f");
    assert_eq!(errno(core.getattr(g)), libc::ENOENT);
    assert!(!fx.data_exists(g_data));
    assert_eq!(fx.names(d), ["g"]);

    // A rename onto itself, or between two names of one inode, changes nothing.
    core.rename(d, b"g", d, b"g", RenameMode::Replace).unwrap();
    core.link(f, root, b"other-name").unwrap();
    core.rename(root, b"other-name", d, b"g", RenameMode::Replace).unwrap();
    assert_eq!((fx.lookup(root, "other-name"), fx.lookup(d, "g"), fx.nlink(f)), (f, f, 2));

    // NoReplace.
    assert_eq!(errno(core.rename(root, b"other-name", d, b"g", RenameMode::NoReplace)), libc::EEXIST);
    core.rename(root, b"other-name", root, b"third", RenameMode::NoReplace).unwrap();
    assert_eq!(fx.names(root), ["d", "third"]);

    // A directory over an empty directory.
    let e = fx.dir(root, "e");
    let x = fx.dir(d, "x");
    assert_eq!(fx.nlink(root), 4);
    core.rename(root, b"e", d, b"x", RenameMode::Replace).unwrap();
    assert_eq!(fx.lookup(d, "x"), e);
    assert_eq!(errno(core.getattr(x)), libc::ENOENT);
    assert_eq!((fx.nlink(root), fx.nlink(d)), (3, 3));
    assert_eq!(core.readdir(e, 1).unwrap()[0].ino, d, "the moved directory's .. is its new parent");
    fx.assert_clean();
}

#[test]
fn rename_errors() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let a = fx.dir(root, "a");
    let b = fx.dir(a, "b");
    fx.dir(root, "empty");
    let full = fx.dir(root, "full");
    fx.file(full, "inside");
    fx.file(root, "f");
    fx.file(b, "deep");
    let all = [RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange];

    for mode in all {
        assert_eq!(errno(core.rename(root, b"missing", root, b"f", mode)), libc::ENOENT);
        assert_eq!(errno(core.rename(Ino(999_999), b"f", root, b"x", mode)), libc::ENOENT);
        assert_eq!(errno(core.rename(root, b"f", Ino(999_999), b"x", mode)), libc::ENOENT);
        assert_eq!(errno(core.rename(root, b"f", fx.lookup(root, "f"), b"x", mode)), libc::ENOTDIR);
        assert_eq!(errno(core.rename(root, b"f", root, &[b'n'; 256], mode)), libc::ENAMETOOLONG);
        assert_eq!(errno(core.rename(root, b".", root, b"x", mode)), libc::EINVAL);
        assert_eq!(errno(core.rename(root, b"f", root, b"..", mode)), libc::EINVAL);
    }
    assert_eq!(errno(core.rename(root, b"f", root, b"missing", RenameMode::Exchange)), libc::ENOENT);
    assert_eq!(errno(core.rename(root, b"f", root, b"a", RenameMode::NoReplace)), libc::EEXIST);
    // Kinds must match when replacing.
    assert_eq!(errno(core.rename(root, b"a", root, b"f", RenameMode::Replace)), libc::ENOTDIR);
    assert_eq!(errno(core.rename(root, b"f", root, b"empty", RenameMode::Replace)), libc::EISDIR);
    assert_eq!(errno(core.rename(root, b"a", root, b"full", RenameMode::Replace)), libc::ENOTEMPTY);
    // A directory cannot move into itself or below itself, in any mode.
    for mode in [RenameMode::Replace, RenameMode::NoReplace] {
        assert_eq!(errno(core.rename(root, b"a", a, b"new", mode)), libc::EINVAL, "{mode:?}");
        assert_eq!(errno(core.rename(root, b"a", b, b"new", mode)), libc::EINVAL, "{mode:?}");
    }
    assert_eq!(errno(core.rename(root, b"a", b, b"deep", RenameMode::Exchange)), libc::EINVAL);
    // ... and cannot swap with something below itself.
    assert_eq!(errno(core.rename(a, b"b", root, b"a", RenameMode::Exchange)), libc::EINVAL);
    // Nothing changed.
    assert_eq!(fx.names(root), ["a", "empty", "full", "f"]);
    assert_eq!(fx.names(a), ["b"]);
    assert_eq!(fx.names(b), ["deep"]);
    fx.assert_clean();
}

/// When several errors apply, Linux reports a directory moved below itself as EINVAL before
/// it looks at the target, and a target that is an ancestor of the source as ENOTEMPTY. The
/// kernel answers both before a FUSE filesystem is asked, so the core need only refuse them
/// and change nothing; either errno that applies will do.
#[test]
fn rename_with_several_errors_fails_without_changes() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let a = fx.dir(root, "a");
    let b = fx.dir(a, "b");
    fx.file(b, "file");
    // a → a/b/file: the source is an ancestor of the target's directory (and not a file).
    let e = errno(core.rename(root, b"a", b, b"file", RenameMode::Replace));
    assert!([libc::EINVAL, libc::ENOTDIR].contains(&e), "errno {e}");
    // a/b/file → a: the target is an ancestor of the source (and a directory).
    let e = errno(core.rename(b, b"file", root, b"a", RenameMode::Replace));
    assert!([libc::ENOTEMPTY, libc::EISDIR].contains(&e), "errno {e}");
    assert_eq!((fx.names(root), fx.names(a), fx.names(b)), (vec!["a".into()], vec!["b".into()], vec!["file".into()]));
    fx.assert_clean();
}

#[test]
fn exchange_swaps_two_names() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    let g = fx.file(root, "g");
    fx.write(f, 0, b"f");
    fx.write(g, 0, b"g");
    let before = readdir_all(core, root, 0);
    core.rename(root, b"f", root, b"g", RenameMode::Exchange).unwrap();
    assert_eq!((fx.lookup(root, "f"), fx.lookup(root, "g")), (g, f));
    assert_eq!(fx.read(fx.lookup(root, "f")), b"g");
    // Both names keep their places in the directory.
    assert_eq!(readdir_all(core, root, 0), before);
    // Exchanging a name with itself is a no-op.
    core.rename(root, b"f", root, b"f", RenameMode::Exchange).unwrap();
    assert_eq!(fx.lookup(root, "f"), g);
    fx.assert_clean();
}

#[test]
fn dir_nlink_counts_subdirectories_through_renames() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    assert_eq!(fx.nlink(root), 2);
    let p1 = fx.dir(root, "p1");
    let p2 = fx.dir(root, "p2");
    assert_eq!(fx.nlink(root), 4);
    let d = fx.dir(p1, "d");
    fx.dir(d, "sub");
    fx.file(p1, "x");
    assert_eq!((fx.nlink(p1), fx.nlink(p2), fx.nlink(d)), (3, 2, 3));

    // Moving a directory between parents moves one link.
    core.rename(p1, b"d", p2, b"d", RenameMode::Replace).unwrap();
    assert_eq!((fx.nlink(p1), fx.nlink(p2), fx.nlink(d)), (2, 3, 3));
    fx.assert_clean();
    // Files do not count.
    core.rename(p1, b"x", p2, b"x", RenameMode::Replace).unwrap();
    assert_eq!((fx.nlink(p1), fx.nlink(p2)), (2, 3));
    // Within one parent nothing changes.
    core.rename(p2, b"d", p2, b"d2", RenameMode::Replace).unwrap();
    assert_eq!(fx.nlink(p2), 3);
    fx.assert_clean();

    // Exchange a file in p1 with a directory in p2: p2 loses a subdirectory, p1 gains one.
    let file = fx.file(p1, "file");
    core.rename(p1, b"file", p2, b"d2", RenameMode::Exchange).unwrap();
    assert_eq!((fx.lookup(p1, "file"), fx.lookup(p2, "d2")), (d, file));
    assert_eq!((fx.nlink(p1), fx.nlink(p2), fx.nlink(d), fx.nlink(file)), (3, 2, 3, 1));
    assert_eq!(core.readdir(d, 1).unwrap()[0].ino, p1, "the moved directory's .. is its new parent");
    assert_eq!(fx.attr(fx.lookup(p1, "file")).kind, Kind::Dir);
    assert_eq!(core.lookup(p2, b"d2").unwrap().kind, Kind::File);
    fx.assert_clean();
    // And back, the other way round.
    core.rename(p2, b"d2", p1, b"file", RenameMode::Exchange).unwrap();
    assert_eq!((fx.nlink(p1), fx.nlink(p2)), (2, 3));
    assert_eq!(core.readdir(d, 1).unwrap()[0].ino, p2);
    fx.assert_clean();

    // Exchange two directories in different parents: counts stay, parents swap.
    let e = fx.dir(p1, "e");
    core.rename(p1, b"e", p2, b"d2", RenameMode::Exchange).unwrap();
    assert_eq!((fx.nlink(p1), fx.nlink(p2)), (3, 3));
    assert_eq!(core.readdir(d, 1).unwrap()[0].ino, p1);
    assert_eq!(core.readdir(e, 1).unwrap()[0].ino, p2);
    fx.assert_clean();

    // A directory replacing an empty one in another parent.
    fx.dir(p2, "victim");
    assert_eq!(fx.nlink(p2), 4);
    core.rename(p1, b"e", p2, b"victim", RenameMode::Replace).unwrap();
    assert_eq!((fx.nlink(p1), fx.nlink(p2)), (2, 4));
    assert_eq!(fx.nlink(root), 4);
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Ownership
// ---------------------------------------------------------------------------------------------

#[test]
fn setgid_directories_pass_on_their_group() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let shared = fx.dir(root, "shared");
    core.setattr(shared, &SetAttr { gid: Some(50), mode: Some(0o2775), ..SetAttr::default() }, None).unwrap();

    let f = core.make_node(USER, shared, b"f", NodeSpec::File, 0o664).unwrap();
    assert_eq!((f.uid, f.gid, f.perm), (1000, 50, 0o664), "files take the group, not the setgid bit");
    let d = core.make_node(USER, shared, b"d", NodeSpec::Dir, 0o755).unwrap();
    assert_eq!((d.uid, d.gid, d.perm), (1000, 50, 0o2755), "directories take both");
    let s = core.make_node(USER, shared, b"s", NodeSpec::Symlink(b"f".to_vec()), 0o777).unwrap();
    assert_eq!(s.gid, 50);
    // The inheritance continues below.
    let dd = core.make_node(USER, d.ino, b"dd", NodeSpec::Dir, 0o700).unwrap();
    assert_eq!((dd.gid, dd.perm), (50, 0o2700));
    // Without setgid, the caller's group.
    let plain = core.make_node(USER, root, b"plain", NodeSpec::Dir, 0o755).unwrap();
    assert_eq!((plain.gid, plain.perm), (1000, 0o755));
    let other = Caller { uid: 5, gid: 6, umask: 0 };
    let o = core.make_node(other, plain.ino, b"o", NodeSpec::Dir, 0o755).unwrap();
    assert_eq!((o.uid, o.gid), (5, 6));
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn parent_times_change_on_create_and_remove() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let mut last = fx.attr(d);
    let mut step = |what: &str, op: &dyn Fn()| {
        pause();
        op();
        let now = fx.attr(d);
        assert!(now.mtime > last.mtime, "{what}: mtime {:?} -> {:?}", last.mtime, now.mtime);
        assert!(now.ctime > last.ctime, "{what}: ctime {:?} -> {:?}", last.ctime, now.ctime);
        last = now;
    };
    step("create", &|| {
        fx.file(d, "f");
    });
    step("mkdir", &|| {
        fx.dir(d, "sub");
    });
    step("symlink", &|| {
        core.make_node(USER, d, b"s", NodeSpec::Symlink(b"t".to_vec()), 0o777).unwrap();
    });
    step("link", &|| {
        core.link(fx.lookup(d, "f"), d, b"f2").unwrap();
    });
    step("unlink", &|| {
        core.unlink(d, b"f2").unwrap();
    });
    step("rmdir", &|| {
        core.rmdir(d, b"sub").unwrap();
    });
    step("rename within", &|| {
        core.rename(d, b"f", d, b"g", RenameMode::Replace).unwrap();
    });
    step("rename out", &|| {
        core.rename(d, b"g", root, b"g", RenameMode::Replace).unwrap();
    });
    step("rename in", &|| {
        core.rename(root, b"g", d, b"g", RenameMode::Replace).unwrap();
    });
    step("exchange", &|| {
        fx.file(root, "h");
        core.rename(root, b"h", d, b"g", RenameMode::Exchange).unwrap();
    });
    // A failed operation changes nothing.
    pause();
    assert_eq!(errno(core.make_node(USER, d, b"g", NodeSpec::File, 0o644)), libc::EEXIST);
    assert_eq!(errno(core.unlink(d, b"missing")), libc::ENOENT);
    assert_eq!(fx.attr(d), last);
}

#[test]
fn ctime_changes_with_every_change_to_an_inode() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    let d = fx.dir(root, "d");
    let mut last = fx.attr(f);
    let mut step = |what: &str, op: &dyn Fn()| {
        pause();
        op();
        let now = fx.attr(f);
        assert!(now.ctime > last.ctime, "{what}: ctime {:?} -> {:?}", last.ctime, now.ctime);
        last = now;
    };
    step("link", &|| {
        core.link(f, d, b"g").unwrap();
    });
    step("unlink of another name", &|| {
        core.unlink(d, b"g").unwrap();
    });
    step("rename", &|| {
        core.rename(root, b"f", d, b"f", RenameMode::Replace).unwrap();
    });
    step("chmod", &|| {
        core.setattr(f, &set_mode(0o600), None).unwrap();
    });
    step("chown", &|| {
        core.setattr(f, &SetAttr { uid: Some(1), ..SetAttr::default() }, None).unwrap();
    });
    step("truncate", &|| {
        core.setattr(f, &SetAttr { size: Some(10), ..SetAttr::default() }, None).unwrap();
    });
    step("utimens", &|| {
        let set = SetAttr { mtime: Some(TimeSet::At(SystemTime::UNIX_EPOCH.into())), ..SetAttr::default() };
        core.setattr(f, &set, None).unwrap();
    });
    step("setxattr", &|| core.setxattr(f, b"user.a", b"1", XattrMode::Any, false).unwrap());
    step("replace xattr", &|| core.setxattr(f, b"user.a", b"2", XattrMode::Replace, false).unwrap());
    step("removexattr", &|| core.removexattr(f, b"user.a").unwrap());
    step("write", &|| fx.write(f, 0, b"x"));
    pause();
    assert_eq!(errno(core.removexattr(f, b"user.a")), libc::ENODATA);
    assert_eq!(fx.attr(f).ctime, last.ctime, "a failed removexattr changes nothing");

    // The same for a directory, whose times live in the metadata only.
    let mut last = fx.attr(d);
    let mut step = |what: &str, op: &dyn Fn()| {
        pause();
        op();
        let now = fx.attr(d);
        assert!(now.ctime > last.ctime, "{what}: ctime {:?} -> {:?}", last.ctime, now.ctime);
        last = now;
    };
    step("chmod", &|| {
        core.setattr(d, &set_mode(0o700), None).unwrap();
    });
    step("setxattr", &|| core.setxattr(d, b"user.a", b"1", XattrMode::Any, false).unwrap());
    step("rename", &|| {
        core.rename(root, b"d", root, b"d2", RenameMode::Replace).unwrap();
    });
}

#[test]
fn writes_change_mtime_and_size() {
    let fx = Fixture::new();
    let f = fx.file(fx.root(), "f");
    let before = fx.attr(f);
    pause();
    fx.write(f, 0, b"abc");
    let after = fx.attr(f);
    assert!(after.mtime > before.mtime && after.ctime > before.ctime, "{before:?} -> {after:?}");
    assert_eq!(after.size, 3);
}

// ---------------------------------------------------------------------------------------------
// Extended attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn xattrs_set_get_list_remove() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    let d = fx.dir(root, "d");
    let s = core.make_node(USER, root, b"s", NodeSpec::Symlink(b"f".to_vec()), 0o777).unwrap();
    for ino in [f, d, s.ino] {
        assert_eq!(core.listxattr(ino).unwrap(), b"");
        core.setxattr(ino, b"user.one", b"1", XattrMode::Any, false).unwrap();
        core.setxattr(ino, b"trusted.two", b"", XattrMode::Create, false).unwrap();
        core.setxattr(ino, b"user.one", b"uno", XattrMode::Replace, false).unwrap();
        assert_eq!(errno(core.setxattr(ino, b"security.big", &vec![7u8; 65_536], XattrMode::Any, false)), libc::ENOSPC);
        core.setxattr(ino, b"security.big", &vec![7u8; 4000], XattrMode::Any, false).unwrap();
        assert_eq!(core.getxattr(ino, b"user.one").unwrap(), b"uno");
        assert_eq!(core.getxattr(ino, b"trusted.two").unwrap(), b"");
        assert_eq!(core.getxattr(ino, b"security.big").unwrap().len(), 4000);
        let list = core.listxattr(ino).unwrap();
        let names: BTreeSet<&[u8]> = list.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
        assert_eq!(names, BTreeSet::from([&b"user.one"[..], b"trusted.two", b"security.big"]));
        assert_eq!(list.last(), Some(&0), "every name ends in NUL");

        assert_eq!(errno(core.setxattr(ino, b"user.one", b"x", XattrMode::Create, false)), libc::EEXIST);
        assert_eq!(errno(core.setxattr(ino, b"user.none", b"x", XattrMode::Replace, false)), libc::ENODATA);
        assert_eq!(errno(core.getxattr(ino, b"user.none")), libc::ENODATA);
        assert_eq!(errno(core.removexattr(ino, b"user.none")), libc::ENODATA);
        assert_eq!(errno(core.setxattr(ino, b"user.v", &vec![0u8; 65_537], XattrMode::Any, false)), libc::E2BIG);
        let long = [b"user.".to_vec(), vec![b'n'; 251]].concat();
        assert_eq!(errno(core.setxattr(ino, &long, b"x", XattrMode::Any, false)), libc::ERANGE);
        assert_eq!(errno(core.setxattr(ino, b"", b"x", XattrMode::Any, false)), libc::EINVAL);
        assert_eq!(errno(core.setxattr(ino, b"other.ns", b"x", XattrMode::Any, false)), libc::EOPNOTSUPP);
        assert_eq!(errno(core.setxattr(ino, b"user.", b"x", XattrMode::Any, false)), libc::EOPNOTSUPP);
        assert_eq!(errno(core.getxattr(ino, b"nonamespace")), libc::EOPNOTSUPP);

        core.removexattr(ino, b"user.one").unwrap();
        assert_eq!(errno(core.getxattr(ino, b"user.one")), libc::ENODATA);
        assert_eq!(core.getxattr(ino, b"trusted.two").unwrap(), b"");
    }
    let missing = Ino(999_999);
    assert_eq!(errno(core.setxattr(missing, b"user.a", b"x", XattrMode::Any, false)), libc::ENOENT);
    assert_eq!(errno(core.getxattr(missing, b"user.a")), libc::ENOENT);
    assert_eq!(errno(core.listxattr(missing)), libc::ENOENT);
    assert_eq!(errno(core.removexattr(missing, b"user.a")), libc::ENOENT);
    fx.assert_clean();
}

#[test]
fn xattrs_go_with_their_inode() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    core.setxattr(f, b"user.a", b"1", XattrMode::Any, false).unwrap();
    let victim = fx.file(root, "victim");
    core.setxattr(victim, b"user.v", b"1", XattrMode::Any, false).unwrap();
    core.rename(root, b"f", root, b"victim", RenameMode::Replace).unwrap();
    assert_eq!(core.getxattr(f, b"user.a").unwrap(), b"1", "xattrs follow a rename");
    assert!(core.meta().xattr_names(victim).unwrap().is_empty(), "a replaced file's xattrs go");
    core.unlink(root, b"victim").unwrap();
    assert!(core.meta().xattr_names(f).unwrap().is_empty(), "an unlinked file's xattrs go");
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Readdir
// ---------------------------------------------------------------------------------------------

#[test]
fn readdir_lists_dot_dotdot_and_entries_with_kinds() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let f = fx.file(d, "f");
    let entries = core.readdir(d, 0).unwrap();
    let summary: Vec<_> =
        entries.iter().map(|e| (e.ino, e.kind, String::from_utf8_lossy(&e.name).into_owned())).collect();
    assert_eq!(summary, [(d, Kind::Dir, ".".into()), (root, Kind::Dir, "..".into()), (f, Kind::File, "f".into())]);
    let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase: {offsets:?}");
    // The root's .. is itself.
    assert_eq!(core.readdir(root, 1).unwrap()[0].ino, root);
    // Resuming after the last entry returns nothing.
    assert!(core.readdir(d, *offsets.last().unwrap()).unwrap().is_empty());
}

#[test]
fn readdir_offsets_stay_valid_across_inserts_and_removals() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let n = 600; // more than one batch
    for i in 0..n {
        fx.file(d, &format!("f{i:04}"));
    }
    let first = readdir_all(core, d, 0);
    assert_eq!(first.len(), n + 2);
    let names: Vec<&str> = first.iter().skip(2).map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, (0..n).map(|i| format!("f{i:04}")).collect::<Vec<_>>());

    // Pause the listing in the middle: remove entries on both sides of the cursor, including
    // the one the cursor points at, and add new ones.
    let (cursor, at) = first[300].clone();
    for gone in ["f0000", "f0100", at.as_str(), "f0299", "f0300", "f0500", "f0599"] {
        core.unlink(d, gone.as_bytes()).unwrap();
    }
    for i in 0..5 {
        fx.file(d, &format!("new{i}"));
    }
    let rest: Vec<String> = readdir_all(core, d, cursor).into_iter().map(|(_, n)| n).collect();
    let mut want: Vec<String> = (299..n)
        .map(|i| format!("f{i:04}"))
        .filter(|n| !["f0299", "f0300", "f0500", "f0599"].contains(&n.as_str()))
        .collect();
    want.extend((0..5).map(|i| format!("new{i}")));
    assert_eq!(rest, want, "each entry present throughout appears once, none appears twice");

    // Every offset handed out still resumes after the same entry (unless removed).
    let now = readdir_all(core, d, 0);
    let before: std::collections::BTreeMap<u64, String> = first.into_iter().collect();
    for (off, name) in &now {
        if let Some(old) = before.get(off) {
            assert_eq!(old, name, "offset {off} names the same entry");
        }
    }
    // A rename moves an entry to the end; an exchange keeps both places.
    core.rename(d, b"f0001", d, b"renamed", RenameMode::Replace).unwrap();
    let names: Vec<String> = fx.names(d);
    assert_eq!(names.last().map(String::as_str), Some("renamed"));
    let pos = |names: &[String], n: &str| names.iter().position(|x| x == n).unwrap();
    let (p2, p3) = (pos(&names, "f0002"), pos(&names, "f0003"));
    core.rename(d, b"f0002", d, b"f0003", RenameMode::Exchange).unwrap();
    let names = fx.names(d);
    assert_eq!((pos(&names, "f0002"), pos(&names, "f0003")), (p2, p3));
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Unlink while open
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unlinked_open_file_lives_until_its_last_release() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let f = fx.file(root, "f");
    fx.write(f, 0, b"still here");
    let id = fx.data_id(f);

    let file = core.open(f).unwrap();
    let second = core.open(f).unwrap();
    core.unlink(root, b"f").unwrap();
    assert_eq!(errno(core.lookup(root, b"f")), libc::ENOENT);
    assert!(fx.names(root).is_empty());
    let attr = fx.attr(f);
    assert_eq!((attr.nlink, attr.size), (0, 10));
    assert_eq!(core.read(&file, 0, 100).unwrap(), b"still here");
    core.write(&file, 10, b"!").unwrap();
    core.setattr(f, &SetAttr { mode: Some(0o600), ..SetAttr::default() }, Some(&file)).unwrap();
    core.setxattr(f, b"user.x", b"1", XattrMode::Any, false).unwrap();
    assert_eq!(core.read(&second, 0, 100).unwrap(), b"still here!");

    let report = fx.fsck();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.reclaimable.len(), 1, "{:?}", report.reclaimable);

    drop(second);
    core.release(f).unwrap();
    assert_eq!(fx.attr(f).nlink, 0, "one opener is left");
    assert_eq!(core.read(&file, 0, 5).unwrap(), b"still");
    drop(file);
    core.release(f).unwrap();
    assert_eq!(errno(core.getattr(f)), libc::ENOENT);
    assert!(!fx.data_exists(id));
    assert!(core.meta().xattr_names(f).unwrap().is_empty());
    assert!(core.meta().orphans().unwrap().is_empty());
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
    assert_eq!(fx.pool.volume_info(&fx.vol).unwrap().inodes, 1);
}

#[test]
fn a_file_replaced_by_rename_while_open_lives_until_release() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let victim = fx.file(root, "victim");
    fx.write(victim, 0, b"old");
    fx.file(root, "new");
    let file = core.open(victim).unwrap();
    core.rename(root, b"new", root, b"victim", RenameMode::Replace).unwrap();
    assert_eq!(fx.attr(victim).nlink, 0);
    assert_eq!(core.read(&file, 0, 10).unwrap(), b"old");
    fx.assert_clean();
    drop(file);
    core.release(victim).unwrap();
    assert_eq!(errno(core.getattr(victim)), libc::ENOENT);
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

#[test]
fn a_new_file_counts_as_open_until_released() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let (attr, Opened { file, .. }) = core.create(USER, root, b"f", 0o644, |_| None::<()>).unwrap();
    core.unlink(root, b"f").unwrap();
    core.write(&file, 0, b"x").unwrap();
    assert_eq!(fx.attr(attr.ino).size, 1);
    drop(file);
    core.release(attr.ino).unwrap();
    assert_eq!(errno(core.getattr(attr.ino)), libc::ENOENT);
    fx.assert_clean();
}

#[test]
fn files_open_at_close_are_reclaimed_at_the_next_open() {
    let fx = Fixture::new();
    let core = fx.core();
    let f = fx.file(fx.root(), "f");
    fx.write(f, 0, b"x");
    let id = fx.data_id(f);
    let _file = core.open(f).unwrap();
    core.unlink(fx.root(), b"f").unwrap();
    let data_path = core.data().path(id);
    let fx = fx.reopen();
    assert_eq!(errno(fx.core().getattr(f)), libc::ENOENT);
    assert!(!data_path.exists());
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
    assert_eq!(fx.pool.volume_info(&fx.vol).unwrap().inodes, 1);
}

// ---------------------------------------------------------------------------------------------
// Persistence and recovery
// ---------------------------------------------------------------------------------------------

#[test]
fn everything_survives_close_and_reopen() {
    let fx = Fixture::new();
    let core = fx.core();
    let root = fx.root();
    let d = fx.dir(root, "d");
    let f = fx.file(d, "f");
    fx.write(f, 0, b"persistent bytes");
    core.link(f, root, b"hard").unwrap();
    let s = core.make_node(USER, d, b"s", NodeSpec::Symlink(b"f".to_vec()), 0o777).unwrap();
    core.setxattr(f, b"user.k", b"value", XattrMode::Any, false).unwrap();
    core.setxattr(d, b"trusted.t", b"dir", XattrMode::Any, false).unwrap();
    core.setattr(d, &SetAttr { mode: Some(0o2710), uid: Some(3), gid: Some(4), ..SetAttr::default() }, None).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_234_567, 891);
    core.setattr(f, &SetAttr { mtime: Some(TimeSet::At(when.into())), ..SetAttr::default() }, None).unwrap();
    let attrs: Vec<Attr> = [root, d, f, s.ino].iter().map(|i| fx.attr(*i)).collect();
    let root_listing = readdir_all(core, root, 0);
    let d_listing = readdir_all(core, d, 0);
    let vol = fx.vol.clone();

    let fx = fx.reopen();
    let core = fx.core();
    assert_eq!(fx.vol, vol);
    assert_eq!(fx.root(), root);
    let again: Vec<Attr> = [root, d, f, s.ino].iter().map(|i| fx.attr(*i)).collect();
    assert_eq!(again, attrs);
    assert_eq!(readdir_all(core, root, 0), root_listing);
    assert_eq!(readdir_all(core, d, 0), d_listing);
    assert_eq!((fx.lookup(root, "d"), fx.lookup(d, "f"), fx.lookup(root, "hard"), fx.lookup(d, "s")), (d, f, f, s.ino));
    assert_eq!(fx.read(f), b"persistent bytes");
    assert_eq!(core.readlink(s.ino).unwrap(), b"f");
    assert_eq!(core.getxattr(f, b"user.k").unwrap(), b"value");
    assert_eq!(core.getxattr(d, b"trusted.t").unwrap(), b"dir");
    assert_eq!(fx.attr(f).mtime, when);
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");

    // New inode numbers never reuse old ones.
    let g = fx.file(d, "g");
    assert!(g > f && g > s.ino, "{g:?}");
    assert_eq!(fx.names(d), ["f", "s", "g"]);
    let vols = fx.pool.volumes().unwrap();
    assert_eq!((vols.len(), vols[0].inodes), (1, 5));
}

#[test]
fn a_pool_has_one_opener_at_a_time() {
    let fx = Fixture::new();
    assert_eq!(pool_errno(Pool::open(&fx.dir, OpenMode::Existing)), libc::EBUSY);
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(pool_errno(Pool::open(&tmp.path().join("none"), OpenMode::Existing)), libc::ENOENT);
    std::fs::write(tmp.path().join("junk"), b"x").unwrap();
    assert_eq!(pool_errno(Pool::open(tmp.path(), OpenMode::CreateIfMissing)), libc::EINVAL);
    let name = VolumeName::parse("v").unwrap();
    assert_eq!(errno(fx.pool.create_volume(&name, 0, None)), libc::EEXIST);
}

#[test]
fn an_unclean_stop_reclaims_stray_data_files() {
    let fx = Fixture::new();
    let f = fx.file(fx.root(), "f");
    fx.write(f, 0, b"kept");
    let stray = DataId(999_999);
    drop(fx.core().data().create(stray).unwrap());
    let stray_path = fx.core().data().path(stray);
    let clean = fx.dir.join("clean");
    let Fixture { _tmp, dir, pool, vol } = fx;
    drop(pool);
    assert!(clean.exists(), "an orderly close leaves the clean mark");
    std::fs::remove_file(&clean).unwrap();

    let pool = Pool::open(&dir, OpenMode::Existing).unwrap();
    assert!(!stray_path.exists(), "recovery reclaims data files no inode refers to");
    let fx = Fixture { _tmp, dir, pool, vol };
    assert_eq!(fx.read(f), b"kept");
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

#[test]
fn fsck_reports_stray_data_as_reclaimable_and_repair_removes_it() {
    let fx = Fixture::new();
    let f = fx.file(fx.root(), "f");
    let stray = DataId(999_999);
    drop(fx.core().data().create(stray).unwrap());
    let stray_path = fx.core().data().path(stray);
    // A clean close skips the data scan, so the stray file is still there after reopening.
    let fx = fx.reopen();
    assert!(stray_path.exists());
    let report = fx.fsck();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.reclaimable.len(), 1, "{:?}", report.reclaimable);
    assert!(report.reclaimable[0].contains("no inode refers to it"), "{:?}", report.reclaimable);
    assert!(!report.repaired);
    assert!(stray_path.exists(), "a check without repair changes nothing");

    let report = fsck::check(&fx.pool, true, true).unwrap();
    assert!(report.problems.is_empty() && report.repaired, "{report:?}");
    assert!(!stray_path.exists());
    assert!(fx.data_exists(fx.data_id(f)), "referenced data stays");
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

#[test]
fn fsck_repair_reclaims_orphans_offline() {
    let fx = Fixture::new();
    let core = fx.core();
    let f = fx.file(fx.root(), "f");
    let id = fx.data_id(f);
    let file = core.open(f).unwrap();
    core.unlink(fx.root(), b"f").unwrap();
    // Served (not offline): an orphan may be open, so repair leaves it.
    let report = fsck::check(&fx.pool, true, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(fx.attr(f).nlink, 0);
    let report = fsck::check(&fx.pool, true, true).unwrap();
    assert!(report.problems.is_empty() && report.repaired, "{report:?}");
    assert_eq!(errno(core.getattr(f)), libc::ENOENT);
    assert!(!fx.data_exists(id));
    drop(file);
    core.release(f).unwrap();
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

#[test]
fn fsck_detects_a_missing_data_file() {
    let fx = Fixture::new();
    let f = fx.file(fx.root(), "f");
    fx.write(f, 0, b"x");
    std::fs::remove_file(fx.core().data().path(fx.data_id(f))).unwrap();
    let report = fx.fsck();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("missing"), "{:?}", report.problems);
    assert!(!report.is_clean());
    // Repair reclaims leftovers only; it does not hide damage.
    let report = fsck::check(&fx.pool, true, true).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

// ---------------------------------------------------------------------------------------------
// Volumes
// ---------------------------------------------------------------------------------------------

#[test]
fn deleting_a_volume_removes_everything_in_it() {
    let fx = Fixture::new();
    let core = fx.core();
    let keep = fx.pool.create_volume(&VolumeName::parse("keep").unwrap(), 0, None).unwrap();
    let kept = fx.file(keep.root, "kept");
    fx.write(kept, 0, b"kept");

    let doomed = fx.pool.create_volume(&VolumeName::parse("doomed").unwrap(), 0, None).unwrap();
    let d = fx.dir(doomed.root, "d");
    let e = fx.dir(d, "e");
    let f = fx.file(e, "f");
    fx.write(f, 0, b"gone");
    core.link(f, doomed.root, b"hard").unwrap();
    core.setxattr(f, b"user.x", b"1", XattrMode::Any, false).unwrap();
    core.setxattr(d, b"user.y", b"2", XattrMode::Any, false).unwrap();
    core.make_node(USER, d, b"s", NodeSpec::Symlink(b"e/f".to_vec()), 0o777).unwrap();
    let open = fx.file(doomed.root, "open");
    let _file = core.open(open).unwrap();
    core.unlink(doomed.root, b"open").unwrap();
    let doomed_data = [fx.data_id(f), fx.data_id(open)];
    fx.assert_clean();

    fx.pool.delete_volume("doomed").unwrap();
    assert_eq!(errno(fx.pool.volume("doomed")), libc::ENOENT);
    assert_eq!(errno(fx.pool.delete_volume("doomed")), libc::ENOENT);
    for ino in [doomed.root, d, e, f, open] {
        assert_eq!(errno(core.getattr(ino)), libc::ENOENT, "{ino:?}");
        // The volume's view is gone with it; fsck below finds any record left behind.
        assert_eq!(errno(core.meta().xattr_names(ino)), libc::ENOENT);
        assert_eq!(errno(core.meta().all_entries(ino)), libc::ENOENT);
    }
    for id in doomed_data {
        assert!(!fx.data_exists(id));
    }
    assert!(core.meta().orphans().unwrap().is_empty());
    assert_eq!(core.data().all().unwrap(), [fx.data_id(kept)]);
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
    assert_eq!(report.volumes, 2);
    // The other volumes are untouched, and the name can be used again, for an empty volume.
    assert_eq!(fx.read(kept), b"kept");
    let again = fx.pool.create_volume(&VolumeName::parse("doomed").unwrap(), 0, None).unwrap();
    assert!(again.id != doomed.id && again.root != doomed.root);
    assert!(fx.names(again.root).is_empty());
    let names: Vec<String> = fx.pool.volumes().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["doomed", "keep", "v"]);
    fx.assert_clean();
}

#[test]
fn usage_counts_inodes() {
    let fx = Fixture::new();
    let core = fx.core();
    let inodes = || fx.pool.volume_info(&fx.vol).unwrap().inodes;
    assert_eq!(inodes(), 1);
    let d = fx.dir(fx.root(), "d");
    let f = fx.file(d, "f");
    core.link(f, fx.root(), b"g").unwrap();
    assert_eq!(inodes(), 3);
    core.unlink(d, b"f").unwrap();
    assert_eq!(inodes(), 3);
    core.unlink(fx.root(), b"g").unwrap();
    core.rmdir(fx.root(), b"d").unwrap();
    assert_eq!(inodes(), 1);
    let st = core.statfs(&fx.vol).unwrap();
    assert_eq!((st.bsize, st.namelen), (4096, 255));
    assert_eq!(st.files - st.ffree, 1);
    fx.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Concurrency and crashes
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[test]
fn concurrent_operations_leave_a_consistent_pool() {
    let fx = Fixture::new();
    let root = fx.root();
    let dirs = [root, fx.dir(root, "a"), fx.dir(root, "b")];
    let names: [&[u8]; 4] = [b"n0", b"n1", b"n2", b"n3"];
    let modes = [RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange];
    let expected =
        [libc::ENOENT, libc::EEXIST, libc::ENOTDIR, libc::EISDIR, libc::ENOTEMPTY, libc::EINVAL, libc::EPERM];
    std::thread::scope(|s| {
        for seed in 0..4u64 {
            let core = fx.core();
            s.spawn(move || {
                let mut rng = Rng(seed + 1);
                for step in 0..500 {
                    let (d1, n1) = (dirs[rng.below(3)], names[rng.below(4)]);
                    let (d2, n2) = (dirs[rng.below(3)], names[rng.below(4)]);
                    let result: volfs::Result<()> = match rng.below(8) {
                        0 => core.make_node(USER, d1, n1, NodeSpec::File, 0o644).map(drop),
                        1 => core.make_node(USER, d1, n1, NodeSpec::Dir, 0o755).map(drop),
                        2 | 3 => core.rename(d1, n1, d2, n2, modes[rng.below(3)]).map(drop),
                        4 => core.unlink(d1, n1).map(drop),
                        5 => core.rmdir(d1, n1),
                        6 => core.lookup(d1, n1).and_then(|a| core.link(a.ino, d2, n2)).map(drop),
                        _ => core.lookup(d1, n1).and_then(|a| {
                            let f = core.open(a.ino)?;
                            let written = core.write(&f, rng.below(100) as u64, b"data");
                            drop(f);
                            core.release(a.ino)?;
                            written.map(drop)
                        }),
                    };
                    if let Err(e) = result {
                        assert!(expected.contains(&e.errno()), "thread {seed}, step {step}: {e}");
                    }
                }
            });
        }
    });
    fx.assert_clean();
    let report = fx.fsck();
    assert!(report.reclaimable.is_empty(), "{:?}", report.reclaimable);
    let fx = fx.reopen();
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
}

const CRASH_DIR: &str = "VOLFS_TEST_CRASH_DIR";

/// Run in a child process by `a_killed_process_leaves_a_consistent_pool`: changes the pool,
/// then dies by SIGKILL, with a file unlinked while open and a stray data file.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else { return };
    let pool = Pool::open(std::path::Path::new(&dir), OpenMode::Existing).unwrap();
    let core = pool.core();
    let root = pool.volume("v").unwrap().root;
    let d = core.make_node(USER, root, b"d", NodeSpec::Dir, 0o755).unwrap();
    let (f, Opened { file, .. }) = core.create(USER, d.ino, b"f", 0o644, |_| None::<()>).unwrap();
    core.write(&file, 0, b"committed").unwrap();
    drop(file);
    core.release(f.ino).unwrap();
    core.link(f.ino, root, b"hard").unwrap();
    core.setxattr(f.ino, b"user.k", b"v", XattrMode::Any, false).unwrap();
    core.rename(root, b"old", d.ino, b"moved", RenameMode::Replace).unwrap();
    let (g, Opened { file: open, .. }) = core.create(USER, root, b"open-then-unlinked", 0o644, |_| None::<()>).unwrap();
    core.write(&open, 0, b"gone").unwrap();
    core.unlink(root, b"open-then-unlinked").unwrap();
    drop(core.data().create(DataId(999_999)).unwrap());
    println!("orphan {}", g.ino.0);
    // SAFETY: plain syscalls; the process ends here, as if the daemon were killed.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL ends the process");
}

#[test]
fn a_killed_process_leaves_a_consistent_pool() {
    let fx = Fixture::new();
    fx.file(fx.root(), "old");
    let Fixture { _tmp, dir, pool, vol } = fx;
    drop(pool);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, &dir)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let orphan: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("orphan ").map(|(_, n)| n))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("child printed no orphan: {stdout}"));
    assert!(!dir.join("clean").exists(), "a killed process leaves no clean mark");

    // fsck sees the pool as the crash left it: consistent, with leftovers to reclaim.
    let pool = Pool::open_unrecovered(&dir, OpenMode::Existing).unwrap();
    let report = fsck::check(&pool, false, true).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.reclaimable.len(), 2, "{:?}", report.reclaimable);
    drop(pool);
    assert!(!dir.join("clean").exists(), "closing an unrecovered pool must not mark it clean");

    let fx = Fixture { pool: Pool::open(&dir, OpenMode::Existing).unwrap(), _tmp, dir, vol };
    let core = fx.core();
    let report = fx.fsck();
    assert!(report.problems.is_empty() && report.reclaimable.is_empty(), "{report:?}");
    assert_eq!(errno(core.getattr(Ino(orphan))), libc::ENOENT);
    assert!(!fx.data_exists(DataId(999_999)));
    let d = fx.lookup(fx.root(), "d");
    let f = fx.lookup(d, "f");
    assert_eq!(fx.lookup(fx.root(), "hard"), f);
    assert_eq!(fx.nlink(f), 2);
    assert_eq!(fx.read(f), b"committed");
    assert_eq!(core.getxattr(f, b"user.k").unwrap(), b"v");
    assert_eq!(fx.names(fx.root()), ["d", "hard"]);
    assert_eq!(fx.names(d), ["f", "moved"]);
    assert_eq!(fx.pool.volume_info(&fx.vol).unwrap().inodes, 4);
}

/// Everything a pool shows: each volume and snapshot with its capacity, and every name in it
/// with its kind, size and links, in order.
fn visible_state(pool: &Pool) -> Vec<String> {
    let mut state = Vec::new();
    let mut views = pool.core().meta().volumes().unwrap();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    for v in views {
        state.push(format!("{} capacity {}", v.name, v.capacity));
        let mut names = Vec::new();
        pool.walk(v.root, |parent, name, ino, _| {
            let a = pool.core().getattr(ino).unwrap();
            names.push(format!(
                "  {parent:?}/{} {:?} {} bytes {} links",
                String::from_utf8_lossy(name),
                a.kind,
                a.size,
                a.nlink
            ));
        })
        .unwrap();
        names.sort();
        state.extend(names);
    }
    state
}

/// A workload with every kind of metadata change (volumes, directories, files written and
/// fsync'ed, links, renames, xattrs, an unlink while open, a snapshot, a clone, a resize and a
/// snapshot's delete); `after_step` sees the pool after each step. Stops at the first error.
fn crash_workload(pool: &Pool, mut after_step: impl FnMut(&Pool)) -> volfs::Result<()> {
    let name = |n: &str| VolumeName::parse(n).unwrap();
    let mut step = |r: volfs::Result<()>| -> volfs::Result<()> {
        r?;
        after_step(pool);
        Ok(())
    };
    let core = pool.core();
    let vol = pool.create_volume(&name("v"), 64 << 20, None)?;
    step(Ok(()))?;
    let root = vol.root;
    let dir = core.make_node(USER, root, b"d", NodeSpec::Dir, 0o755)?.ino;
    step(Ok(()))?;
    let write = |parent: Ino, n: &[u8], bytes: usize| -> volfs::Result<Ino> {
        let (attr, Opened { file, .. }) = core.create(USER, parent, n, 0o644, |_| None::<()>)?;
        core.write(&file, 0, &vec![7u8; bytes])?;
        core.fsync(&file, false)?;
        drop(file);
        core.release(attr.ino)?;
        Ok(attr.ino)
    };
    let a = write(dir, b"a", 10_000)?;
    step(Ok(()))?;
    let b = write(root, b"b", 5_000)?;
    step(Ok(()))?;
    step(core.link(b, dir, b"b2").map(drop))?;
    step(core.rename(dir, b"a", root, b"a2", RenameMode::Replace).map(drop))?;
    step(core.setxattr(a, b"user.k", b"value", XattrMode::Any, false))?;
    let (gone, open) = core.create(USER, root, b"gone", 0o644, |_| None::<()>)?;
    step(Ok(()))?;
    step(core.unlink(root, b"gone").map(drop))?;
    drop(open);
    step(core.release(gone.ino))?;
    step(pool.create_snapshot(&name("v"), &name("s")).map(drop))?;
    let file = core.open(b)?;
    core.write(&file, 5_000, &[1u8; 3_000])?;
    core.fsync(&file, false)?;
    drop(file);
    step(core.release(b))?;
    step(pool.create_volume_from(&name("c"), &volfs::pool::Source::Volume("v".into()), None, None).map(drop))?;
    step(pool.resize_volume("v", 128 << 20).map(drop))?;
    step(core.unlink(dir, b"b2").map(drop))?;
    step(pool.delete_snapshot("v@s"))
}

#[test]
fn a_crash_at_any_commit_leaves_a_pool_that_reopens_consistent_with_every_acknowledged_step() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use volfs::meta::memory::{CrashingStore, MemStore};

    // A run without a crash: how many commits there are, and what the pool shows after each step.
    let tmp = tempfile::tempdir().unwrap();
    let commits = Arc::new(AtomicU64::new(0));
    let store = CrashingStore::new(MemStore::default(), 0, commits.clone());
    let pool = Pool::open_with(&tmp.path().join("pool"), OpenMode::CreateIfMissing, Some(Box::new(store))).unwrap();
    let mut expected = vec![visible_state(&pool)];
    crash_workload(&pool, |p| expected.push(visible_state(p))).unwrap();
    drop(pool);
    let total = commits.load(Ordering::SeqCst);
    assert!(total > 10, "the workload commits {total} times");

    for crash_at in 1..=total {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pool");
        let records = MemStore::default();
        let store = CrashingStore::new(records.clone(), crash_at, Arc::new(AtomicU64::new(0)));
        let pool = Pool::open_with(&dir, OpenMode::CreateIfMissing, Some(Box::new(store))).unwrap();
        let mut done = 0;
        let crashed = crash_workload(&pool, |_| done += 1).is_err();
        // What a killed process leaves: the commits before the crash, no clean close.
        drop(pool);
        let pool = Pool::open_with(&dir, OpenMode::Existing, Some(Box::new(records))).unwrap();
        let report = fsck::check(&pool, false, true).unwrap();
        assert!(report.problems.is_empty(), "crash at commit {crash_at}: fsck: {:#?}", report.problems);
        // Every step answered before the crash is there; the one it interrupted is all there
        // or not at all.
        let state = visible_state(&pool);
        let acceptable = &expected[done..(done + 2).min(expected.len())];
        assert!(
            acceptable.contains(&state),
            "crash at commit {crash_at} (after {done} steps, crashed: {crashed}):\n{state:#?}\nexpected one of {acceptable:#?}"
        );
    }
}

#[test]
fn the_kernel_gets_a_files_data_only_where_its_writes_need_no_daemon() {
    let fx = Fixture::new();
    let (core, root) = (fx.core(), fx.root());
    let kernel = |_: &volfs::core::OpenFile| Some(());
    let open = |caller: &Caller, ino: Ino, writable: bool| {
        let opened = core.open_for_kernel(caller, ino, writable, kernel).unwrap();
        let passed = opened.passthrough.is_some();
        core.close(&opened.file, passed).unwrap();
        passed
    };

    // A volume without a capacity, a file only it holds: the kernel does the I/O.
    let (f, opened) = core.create(USER, root, b"f", 0o755, kernel).unwrap();
    assert!(opened.passthrough.is_some());
    core.write(&opened.file, 0, b"written by the daemon").unwrap();
    core.close(&opened.file, true).unwrap();
    assert!(open(&USER, f.ino, true));

    // A write by an unprivileged caller must clear setuid/setgid: only the daemon sees it.
    core.setattr(f.ino, &set_mode(0o4755), None).unwrap();
    assert!(!open(&USER, f.ino, true), "unprivileged writer of a setuid file");
    assert!(open(&USER, f.ino, false), "a reader");
    assert!(open(&Caller::ROOT, f.ino, true), "root keeps setuid on write");
    core.setattr(f.ino, &set_mode(0o2745), None).unwrap();
    assert!(open(&USER, f.ino, true), "setgid without group execute is no privilege to clear");

    // The kernel serves all opens of an inode one way at a time: an open follows those there.
    core.setattr(f.ino, &set_mode(0o4755), None).unwrap();
    let daemons = core.open_for_kernel(&USER, f.ino, true, kernel).unwrap();
    assert!(daemons.passthrough.is_none());
    assert!(!open(&Caller::ROOT, f.ino, false), "while the daemon serves an open, so it serves the next");
    core.close(&daemons.file, false).unwrap();
    let kernels = core.open_for_kernel(&Caller::ROOT, f.ino, false, kernel).unwrap();
    assert!(kernels.passthrough.is_some());
    assert!(open(&USER, f.ino, true), "while the kernel serves an open, an unprivileged writer's too");
    assert_eq!(core.getattr(f.ino).unwrap().perm, 0o755, "the bits its first write would clear went at once");
    core.close(&kernels.file, true).unwrap();

    // A snapshot shares the data file: it must be copied before it changes.
    fx.pool.create_snapshot(&VolumeName::parse("v").unwrap(), &VolumeName::parse("s").unwrap()).unwrap();
    assert!(!open(&USER, f.ino, false));
    let file = core.open(f.ino).unwrap();
    core.write(&file, 0, b"W").unwrap();
    core.release(f.ino).unwrap();
    assert!(!open(&USER, f.ino, true), "its own top over the snapshot's file: a stack the daemon reads");
    let (_, opened) = core.create(USER, root, b"new", 0o644, kernel).unwrap();
    assert!(opened.passthrough.is_some(), "a file made after the snapshot is the volume's alone");
    core.close(&opened.file, true).unwrap();

    // A volume with a capacity: the daemon holds its writes to it.
    let held = fx.pool.create_volume(&VolumeName::parse("held").unwrap(), 1 << 20, None).unwrap();
    let (g, opened) = core.create(USER, held.root, b"g", 0o644, kernel).unwrap();
    assert!(opened.passthrough.is_none());
    core.close(&opened.file, false).unwrap();
    assert!(!open(&Caller::ROOT, g.ino, true));
    fx.assert_clean();
}

#[test]
fn chown_and_unprivileged_truncate_clear_setuid_and_setgid() {
    let fx = Fixture::new();
    let (core, root) = (fx.core(), fx.root());
    let f = fx.file(root, "f");
    let d = fx.dir(root, "d");
    let perm = |ino: Ino| core.getattr(ino).unwrap().perm;
    let set = |ino: Ino, set: SetAttr| core.setattr(ino, &set, None).unwrap();

    set(f, set_mode(0o6755));
    set(f, SetAttr { size: Some(1), ..SetAttr::default() });
    assert_eq!(perm(f), 0o6755, "root's truncate keeps them");
    set(f, SetAttr { size: Some(2), unprivileged: true, ..SetAttr::default() });
    assert_eq!(perm(f), 0o0755, "another's truncate clears both (group execute is set)");

    set(f, set_mode(0o6745));
    set(f, SetAttr { uid: Some(1000), ..SetAttr::default() });
    assert_eq!(perm(f), 0o2745, "chown clears setuid; setgid without group execute stays");
    set(f, set_mode(0o6755));
    set(f, SetAttr { ctime: true, ..SetAttr::default() });
    assert_eq!(perm(f), 0o0755, "chown to -1 -1 (ctime alone) clears them too");
    set(f, set_mode(0o6755));
    set(f, SetAttr { mode: Some(0o6755), uid: Some(0), ..SetAttr::default() });
    assert_eq!(perm(f), 0o6755, "a mode given with the owner stands");
    set(f, SetAttr { mtime: Some(TimeSet::Now), ctime: true, ..SetAttr::default() });
    assert_eq!(perm(f), 0o0755, "ctime with times only is a bare chown as the kernel sends one");

    set(d, set_mode(0o2755));
    set(d, SetAttr { gid: Some(50), ..SetAttr::default() });
    assert_eq!(perm(d), 0o2755, "directories keep setgid on chown");

    let file = core.open(f).unwrap();
    set(f, set_mode(0o4755));
    core.write_kills_suidgid(f).unwrap();
    assert_eq!(perm(f), 0o0755, "an unprivileged write clears setuid");
    drop(file);
    core.release(f).unwrap();
    fx.assert_clean();
}
