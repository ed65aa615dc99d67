//! The harness of the tests that run the `volfs` binary: a private pool per test (so tests run in
//! parallel), volumes mounted through the kernel that unmount themselves on drop, a daemon that
//! stops when its pool is dropped, and closures run with other credentials.

#![allow(dead_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod docker;
pub mod mountd;

pub const VOLFS: &str = env!("CARGO_BIN_EXE_volfs");

/// How long a daemon may take to stop before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// How a volume is mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountOpts {
    pub read_only: bool,
    pub passthrough: bool,
    /// A subPath view of this directory of the volume.
    pub subpath: Option<&'static str>,
    /// With `subpath`: make its missing directories.
    pub create: bool,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts { read_only: false, passthrough: true, subpath: None, create: false }
    }
}

impl MountOpts {
    pub fn read_only() -> Self {
        MountOpts { read_only: true, ..Self::default() }
    }

    pub fn mode(mode: Mode) -> Self {
        MountOpts { passthrough: mode == Mode::Passthrough, ..Self::default() }
    }

    pub fn subpath(path: &'static str) -> Self {
        MountOpts { subpath: Some(path), ..Self::default() }
    }
}

/// Who serves file I/O: the kernel straight on the data files, or the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Passthrough,
    NoPassthrough,
}

/// A pool in a fresh directory under /tmp (short, so socket paths fit), with the daemon that
/// serves it once something is mounted.
pub struct TestPool {
    root: tempfile::TempDir,
    pool: PathBuf,
    next_dir: AtomicU32,
}

impl TestPool {
    /// A pool directory that does not exist yet; the first command creates it.
    pub fn new() -> Self {
        let root = tempfile::Builder::new().prefix("vt").tempdir_in("/tmp").expect("creating a temp dir");
        // Other uids must reach the mountpoints below.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let pool = root.path().join("p");
        TestPool { root, pool, next_dir: AtomicU32::new(0) }
    }

    /// The pool directory.
    pub fn path(&self) -> &Path {
        &self.pool
    }

    /// The temp dir that holds the pool and the mountpoints.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A fresh empty directory beside the pool.
    pub fn fresh_dir(&self) -> PathBuf {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.path().join(format!("m{n}"));
        fs::create_dir(&dir).expect("creating a mountpoint");
        dir
    }

    /// `volfs --pool POOL ARGS...`, ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(VOLFS);
        cmd.arg("--pool").arg(&self.pool).args(args);
        cmd.env_remove("VOLFS_POOL").env_remove("VOLFS_SOCKET").env_remove("VOLFS_LOG");
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "volfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs a command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("volfs {all:?} printed no JSON ({e}): {text}"))
    }

    pub fn create_volume(&self, name: &str, capacity: Option<&str>) {
        let mut args = vec!["volume", "create", name];
        if let Some(c) = capacity {
            args.extend(["--capacity", c]);
        }
        self.ok(&args);
    }

    /// Volume names, from `volume list --json`.
    pub fn volume_names(&self) -> Vec<String> {
        let list = self.json(&["volume", "list"]);
        let mut names: Vec<String> = list
            .as_array()
            .expect("volume list is an array")
            .iter()
            .map(|v| v["name"].as_str().expect("volume has a name").to_string())
            .collect();
        names.sort();
        names
    }

    /// Mounts `volume` (created first when missing) on a fresh directory.
    pub fn mount(&self, volume: &str, opts: MountOpts) -> Mount<'_> {
        if !self.pool.join("volfs-pool").exists() || !self.volume_names().iter().any(|n| n == volume) {
            self.create_volume(volume, None);
        }
        let at = self.fresh_dir();
        self.mount_at(volume, &at, opts)
    }

    /// Mounts `volume` on an existing directory.
    pub fn mount_at(&self, volume: &str, at: &Path, opts: MountOpts) -> Mount<'_> {
        let at_str = at.to_str().expect("UTF-8 path");
        let mut args = vec!["mount", volume, at_str];
        if opts.read_only {
            args.push("--read-only");
        }
        if !opts.passthrough {
            args.push("--no-passthrough");
        }
        if let Some(sub) = opts.subpath {
            args.extend(["--subpath", sub]);
        }
        if opts.create {
            args.push("--create");
        }
        self.ok(&args);
        assert!(is_mountpoint(at), "volfs mount returned but nothing is mounted at {}", at.display());
        Mount { pool: self, path: at.to_path_buf() }
    }

    /// The pid of the daemon serving the pool: the holder of the pool's lock.
    pub fn daemon_pid(&self) -> Option<i32> {
        let lock = fs::File::open(self.pool.join("lock")).ok()?;
        // SAFETY: flock on a descriptor we own; a shared probe, released when `lock` closes.
        let free = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            return None;
        }
        fs::read_to_string(self.pool.join("lock")).ok()?.trim().parse().ok()
    }

    /// Stops the daemon (`volfs shutdown`), waits for it to exit, and kills it if it does not.
    /// Returns whether the shutdown request succeeded.
    pub fn shutdown(&self) -> bool {
        let Some(pid) = self.daemon_pid() else { return false };
        let out = self.run(&["shutdown"]);
        if !wait_pid_exit(pid, STOP_WAIT) {
            // SAFETY: signals the daemon this pool started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_pid_exit(pid, STOP_WAIT);
        }
        out.status.success()
    }

    /// The daemon's log (it writes one into the pool when `volfs mount` starts it).
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.pool.join("daemon.log")).unwrap_or_default()
    }
}

impl Default for TestPool {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        self.shutdown();
        // A mount the daemon did not take down must not stop the temp dir's removal.
        for at in mountpoints_under(self.root.path()) {
            lazy_unmount(&at);
        }
    }
}

/// A mounted volume; unmounts itself on drop.
pub struct Mount<'a> {
    pool: &'a TestPool,
    path: PathBuf,
}

impl Mount<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Unmounts now, asserting that `volfs umount` succeeds.
    pub fn unmount(self) {
        let at = self.path.to_str().expect("UTF-8 path").to_string();
        self.pool.ok(&["umount", &at]);
        assert!(!is_mountpoint(&self.path), "{at} is still mounted after volfs umount");
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if !is_mountpoint(&self.path) {
            return;
        }
        let _ = self.pool.run(&["umount", self.path.to_str().expect("UTF-8 path")]);
        if is_mountpoint(&self.path) {
            lazy_unmount(&self.path);
        }
    }
}

pub fn lazy_unmount(at: &Path) {
    let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(at).stderr(Stdio::null()).status();
}

/// Runs a command to completion, killing it if it runs far longer than any volfs command should.
pub fn run_bounded(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running volfs");
    let pid = child.id() as i32;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    if !wait_pid_exit(pid, Duration::from_secs(60)) {
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    waiter.join().expect("waiter thread").expect("collecting output")
}

/// Waits for a child to exit, up to `limit`; kills it past that and returns None.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    if wait_pid_exit(child.id() as i32, limit) {
        return Some(child.wait().expect("reaping a child"));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Waits until process `pid` has exited (or is a zombie), at most `limit`. Returns whether it
/// did. Works for processes that are not our children, through a pidfd.
pub fn wait_pid_exit(pid: i32, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // ESRCH: it is gone already.
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: the descriptor was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return n > 0;
    }
}

/// Whether something is mounted exactly at `path`.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else { return false };
    volfs::daemon::mount_table().contains(&canon)
}

/// Mountpoints at or below `dir`.
pub fn mountpoints_under(dir: &Path) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = volfs::daemon::mount_table().into_iter().filter(|m| m.starts_with(dir)).collect();
    // Innermost first.
    list.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    list
}

/// A path as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Turns a libc return value into a result carrying errno.
pub fn cvt<T: Default + PartialOrd>(rc: T) -> io::Result<T> {
    if rc < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The errno of a failed call; panics (naming `what`) when the call succeeded.
pub fn errno_of<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Runs `f` in a forked child with uid `uid`, gid `gid` and no supplementary groups. Returns
/// what `f` returned: its errno survives the trip through a pipe. `f` should only make
/// syscalls (std::fs is fine) and must not panic.
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).expect("pipe2");
    // SAFETY: both descriptors are new and ours.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child makes syscalls only and leaves through _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // Other tests' descriptors must not stay open in here: a file stays open, for the
        // file system, until every copy of its descriptor is closed.
        let keep = write_end.as_raw_fd() as libc::c_uint;
        // SAFETY: closes descriptors this child never uses; the pipe's write end stays.
        unsafe {
            if keep > 3 {
                libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
            }
            libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
        }
        std::mem::forget(read_end);
        let code: i32 = match switch_credentials(uid, gid) {
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            Ok(()) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => e.raw_os_error().unwrap_or(libc::EIO),
                Err(_) => i32::MIN,
            },
        };
        let bytes = code.to_ne_bytes();
        // SAFETY: writes four bytes to our pipe, then leaves without running destructors.
        unsafe {
            libc::write(write_end.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the rest of a local buffer.
        let n = unsafe { libc::read(read_end.as_raw_fd(), bytes[got..].as_mut_ptr().cast(), 4 - got) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    let mut status = 0;
    // SAFETY: reaps the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(got, 4, "the child running as uid {uid} died without reporting (wait status {status})");
    match i32::from_ne_bytes(bytes) {
        0 => Ok(()),
        i32::MIN => panic!("the closure run as uid {uid} panicked"),
        c if c < 0 => panic!("switching to uid {uid} gid {gid} failed: {}", io::Error::from_raw_os_error(-c)),
        c => Err(io::Error::from_raw_os_error(c)),
    }
}

fn switch_credentials(uid: u32, gid: u32) -> io::Result<()> {
    // Raw syscalls: they change only this (the child's only) thread, with no library state.
    // SAFETY: plain credential syscalls with integer arguments and one valid gid array.
    unsafe {
        cvt(libc::syscall(libc::SYS_setgroups, 1, &gid as *const u32))?;
        cvt(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        cvt(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    Ok(())
}

/// Asserts that a command failed with exactly one line on stderr and nothing on stdout, and
/// that the line names each of `names`. Returns the line.
pub fn assert_fails_naming(out: &Output, what: &str, names: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{what}: succeeded, stdout {stdout:?}");
    assert_eq!(stdout, "", "{what}: printed on stdout");
    let text = stderr.trim_end_matches('\n');
    assert!(!text.is_empty(), "{what}: nothing on stderr");
    assert!(!text.contains('\n'), "{what}: stderr is more than one line:\n{stderr}");
    for name in names {
        assert!(text.contains(name), "{what}: stderr does not name {name:?}: {text}");
    }
    text.to_string()
}
