//! POSIX ACLs as on ext4: one sequence of setfacl, chmod, open, create and mkdir calls, each
//! made by a real uid (a forked child, or `setfacl` run with that uid), runs in a directory on
//! ext4 and in one on a volfs mount; the outcomes (errno, mode, `getfacl` output) must agree
//! step by step. Run in both I/O modes and through a subPath view.

mod common;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::{as_user, cpath, cvt, MountOpts, TestPool};

/// The owner of the files, another user, and a user whose group the ACLs name.
const OWNER: (u32, u32) = (1001, 2001);
const STRANGER: (u32, u32) = (1002, 2002);
const MEMBER: (u32, u32) = (1003, 2003);
const ROOT: (u32, u32) = (0, 0);

enum Op {
    /// open(O_CREAT | O_EXCL | O_WRONLY) with this mode, under umask 022.
    Create(&'static str, u32),
    Mkdir(&'static str, u32),
    Mkfifo(&'static str, u32),
    Read(&'static str),
    Write(&'static str),
    List(&'static str),
    Chmod(&'static str, u32),
    /// chown to -1 and this group.
    Chown(&'static str, u32),
    /// `setfacl ARGS...`
    Setfacl(&'static [&'static str]),
    /// `getfacl` of a path and its mode, as root.
    Show(&'static str),
}

use Op::*;

/// The sequence: a file's access ACL (named user, named group, mask) with chmod in between,
/// then a directory's default ACL inherited by files, directories and FIFOs, chmod of a
/// directory with an ACL, an ACL the mode says all of, and removing ACLs.
const STEPS: &[((u32, u32), Op)] = &[
    (OWNER, Create("f", 0o644)),
    (STRANGER, Read("f")),
    (OWNER, Setfacl(&["-m", "u:1002:---", "f"])),
    (STRANGER, Read("f")),
    (MEMBER, Read("f")),
    (ROOT, Show("f")),
    (OWNER, Setfacl(&["-m", "g:2003:rw", "f"])),
    (ROOT, Show("f")),
    (MEMBER, Write("f")),
    (OWNER, Chmod("f", 0o604)),
    (ROOT, Show("f")),
    (MEMBER, Write("f")),
    (MEMBER, Read("f")),
    (STRANGER, Chmod("f", 0o666)),
    (STRANGER, Setfacl(&["-m", "u:1002:rwx", "f"])),
    (OWNER, Chmod("f", 0o664)),
    (MEMBER, Write("f")),
    (ROOT, Show("f")),
    (OWNER, Setfacl(&["-b", "f"])),
    (ROOT, Show("f")),
    (STRANGER, Read("f")),
    (OWNER, Setfacl(&["-b", "f"])),
    (OWNER, Mkdir("d", 0o755)),
    (OWNER, Setfacl(&["-m", "u:1002:rwx", "-d", "-m", "u:1002:rwx,g:2003:r,o::-", "d"])),
    (OWNER, Setfacl(&["-m", "u:1002:rwx", "d"])),
    (ROOT, Show("d")),
    (OWNER, Create("d/file", 0o666)),
    (ROOT, Show("d/file")),
    (STRANGER, Write("d/file")),
    (MEMBER, Read("d/file")),
    (STRANGER, Create("d/private", 0o600)),
    (ROOT, Show("d/private")),
    (OWNER, Read("d/private")),
    (STRANGER, Mkdir("d/sub", 0o750)),
    (ROOT, Show("d/sub")),
    (STRANGER, Create("d/sub/deep", 0o640)),
    (ROOT, Show("d/sub/deep")),
    (OWNER, Mkfifo("d/fifo", 0o666)),
    (ROOT, Show("d/fifo")),
    (MEMBER, Create("d/member", 0o644)),
    (OWNER, Chmod("d", 0o700)),
    (ROOT, Show("d")),
    (STRANGER, List("d")),
    (STRANGER, Read("d/file")),
    (OWNER, Chmod("d", 0o770)),
    (STRANGER, List("d")),
    (OWNER, Setfacl(&["--set", "u::rw,g::r,o::r", "d/file"])),
    (ROOT, Show("d/file")),
    (OWNER, Setfacl(&["-k", "d"])),
    (OWNER, Create("d/plain", 0o666)),
    (ROOT, Show("d/plain")),
    (OWNER, Setfacl(&["-m", "m::r-x", "d"])),
    (ROOT, Show("d")),
    (STRANGER, Create("d/denied", 0o644)),
    (STRANGER, Read("d/file")),
    // Setting an access ACL on a setgid file outside its group clears setgid; in it, not.
    (OWNER, Mkdir("g", 0o777)),
    (ROOT, Chown("g", 2003)),
    (ROOT, Chmod("g", 0o2777)),
    (OWNER, Create("g/sgid", 0o644)),
    (ROOT, Chmod("g/sgid", 0o2754)),
    (ROOT, Show("g/sgid")),
    (OWNER, Setfacl(&["-m", "u:1002:r", "g/sgid"])),
    (ROOT, Show("g/sgid")),
    (ROOT, Chown("g/sgid", 2001)),
    (ROOT, Chmod("g/sgid", 0o2754)),
    (OWNER, Setfacl(&["-m", "u:1002:rw", "g/sgid"])),
    (ROOT, Show("g/sgid")),
];

/// What a step did, in words that compare across filesystems.
fn run_step(base: &Path, (uid, gid): (u32, u32), op: &Op) -> String {
    let at = |p: &str| cpath(&base.join(p));
    let sys = |f: Box<dyn FnOnce() -> io::Result<()>>| match as_user(uid, gid, f) {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    match *op {
        Create(p, mode) => call_on(sys, at(p), move |c| {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
            // SAFETY: open and close on a valid C string and the descriptor it returned.
            unsafe {
                let fd = libc::open(c.as_ptr(), flags, mode);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
        }),
        // SAFETY (these three): one syscall on a valid C string.
        Mkdir(p, mode) => call_on(sys, at(p), move |c| unsafe { libc::mkdir(c.as_ptr(), mode) }),
        Mkfifo(p, mode) => call_on(sys, at(p), move |c| unsafe { libc::mkfifo(c.as_ptr(), mode) }),
        Chmod(p, mode) => call_on(sys, at(p), move |c| unsafe { libc::chmod(c.as_ptr(), mode) }),
        // SAFETY: one syscall on a valid C string.
        Chown(p, gid) => call_on(sys, at(p), move |c| unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) }),
        Read(p) => {
            let path = base.join(p);
            sys(Box::new(move || fs::File::open(path).map(drop)))
        }
        Write(p) => {
            let path = base.join(p);
            sys(Box::new(move || fs::OpenOptions::new().write(true).open(path).map(drop)))
        }
        List(p) => {
            let path = base.join(p);
            sys(Box::new(move || fs::read_dir(path)?.try_for_each(|e| e.map(drop))))
        }
        Setfacl(args) => {
            let out = Command::new("setfacl").args(args).current_dir(base).uid(uid).gid(gid).output().expect("setfacl");
            format!("exit {:?} {}", out.status.code(), String::from_utf8_lossy(&out.stderr).trim())
        }
        Show(p) => {
            let out = Command::new("getfacl").args(["-c", "-n", p]).current_dir(base).output().expect("getfacl");
            assert!(out.status.success(), "getfacl {p}: {}", String::from_utf8_lossy(&out.stderr));
            let md = fs::symlink_metadata(base.join(p)).expect("stat");
            format!("mode {:o} owner {}:{}\n{}", md.mode(), md.uid(), md.gid(), String::from_utf8_lossy(&out.stdout))
        }
    }
}

/// A syscall on one path, made by the step's user, under umask 022 for those that create.
fn call_on(
    sys: impl FnOnce(Box<dyn FnOnce() -> io::Result<()>>) -> String,
    path: CString,
    call: impl FnOnce(&CString) -> libc::c_int + 'static,
) -> String {
    sys(Box::new(move || {
        // SAFETY: sets the forked child's umask.
        unsafe { libc::umask(0o022) };
        cvt(call(&path)).map(drop)
    }))
}

/// Runs every step in a fresh directory `t` under `root`.
fn run_all(root: &Path) -> Vec<String> {
    let base = root.join("t");
    fs::create_dir(&base).expect("mkdir t");
    fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).expect("chmod t");
    STEPS.iter().map(|(who, op)| run_step(&base, *who, op)).collect()
}

/// The outcomes on ext4, checked against what POSIX ACLs must do so that agreeing with them
/// means something.
fn ext4_outcomes() -> Vec<String> {
    let dir = tempfile::Builder::new().prefix("acl-ext4").tempdir_in("/tmp").expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    // SAFETY: statfs on a valid path into a zeroed struct.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        cvt(libc::statfs(cpath(dir.path()).as_ptr(), &mut st)).expect("statfs");
        st.f_type
    };
    assert_eq!(magic, libc::EXT4_SUPER_MAGIC, "/tmp must be on ext4 for the reference run");
    let outcomes = run_all(dir.path());
    let denied = io::Error::from_raw_os_error(libc::EACCES).to_string();
    let step = |n: usize| &outcomes[n];
    assert_eq!(step(1), "ok", "others may read the 0644 file");
    assert_eq!(step(3), &denied, "the named user's empty entry denies");
    assert_eq!(step(8), "ok", "the named group's rw entry allows writing");
    assert_eq!(step(11), &denied, "chmod 0604 masked the named group out");
    outcomes
}

fn assert_same_as_ext4(volfs_root: &Path) {
    let want = ext4_outcomes();
    let got = run_all(volfs_root);
    for (i, ((who, op), (w, g))) in STEPS.iter().zip(want.iter().zip(&got)).enumerate() {
        let what = match op {
            Create(p, m) => format!("create {p} {m:o}"),
            Mkdir(p, m) => format!("mkdir {p} {m:o}"),
            Mkfifo(p, m) => format!("mkfifo {p} {m:o}"),
            Read(p) => format!("read {p}"),
            Write(p) => format!("write {p}"),
            List(p) => format!("list {p}"),
            Chmod(p, m) => format!("chmod {p} {m:o}"),
            Chown(p, g) => format!("chgrp {p} {g}"),
            Setfacl(a) => format!("setfacl {}", a.join(" ")),
            Show(p) => format!("getfacl {p}"),
        };
        assert_eq!(g, w, "step {i}: uid {} {what}: volfs (left) differs from ext4 (right)", who.0);
    }
}

#[test]
fn acls_as_on_ext4_with_passthrough() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    assert_same_as_ext4(m.path());
}

#[test]
fn acls_as_on_ext4_with_io_in_the_daemon() {
    let pool = TestPool::new();
    pool.create_volume("v", Some("1Gi"));
    let m = pool.mount("v", MountOpts::default());
    assert_same_as_ext4(m.path());
}

#[test]
fn acls_as_on_ext4_in_a_subpath_view() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts { create: true, ..MountOpts::subpath("app/data") });
    assert_same_as_ext4(m.path());
}

#[test]
fn acls_outlive_a_remount_and_reach_other_mounts() {
    let pool = TestPool::new();
    let m = pool.mount("v", MountOpts::default());
    let other = pool.mount("v", MountOpts::default());
    let f = m.join("f");
    fs::write(&f, "x").expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    let read_as_stranger = |path: &Path| {
        let path = path.to_path_buf();
        as_user(STRANGER.0, STRANGER.1, move || fs::read(path).map(drop))
    };
    assert!(read_as_stranger(&other.join("f")).is_ok());
    let out = Command::new("setfacl").args(["-m", "u:1002:---"]).arg(&f).output().expect("setfacl");
    assert!(out.status.success(), "setfacl: {}", String::from_utf8_lossy(&out.stderr));
    let denied = Some(libc::EACCES);
    assert_eq!(read_as_stranger(&other.join("f")).err().and_then(|e| e.raw_os_error()), denied, "other mount");
    let at = m.path().to_path_buf();
    m.unmount();
    other.unmount();
    let again = pool.mount_at("v", &at, MountOpts::default());
    assert_eq!(read_as_stranger(&again.join("f")).err().and_then(|e| e.raw_os_error()), denied, "after a remount");
}
