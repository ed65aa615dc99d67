//! Secret bytes of a projected tree stay in the daemon's memory: a crash with core dumps enabled
//! on the node writes them nowhere.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::TestPool;

const SECRET: &[u8] = b"c0re-dump-canary-8f1d2e";

/// Whether `needle` is in any file below `dir`.
fn found_below(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            found.extend(found_below(&path, needle));
        } else if meta.is_file() {
            if let Ok(bytes) = fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// Core dumps on, into `dir`, for the life of the guard (the kernel's setting is global).
struct CoreDumps(String);

impl CoreDumps {
    fn into(dir: &Path) -> Self {
        let before = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
        fs::write("/proc/sys/kernel/core_pattern", format!("{}/core.%p", dir.display())).unwrap();
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: raises this test process's core limit, which the daemon it starts inherits.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &unlimited) }, 0);
        CoreDumps(before)
    }
}

impl Drop for CoreDumps {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/core_pattern", self.0.trim());
    }
}

#[test]
fn a_crashing_daemon_dumps_no_core_and_secrets_reach_no_disk() {
    let cores = tempfile::tempdir().unwrap();
    let _dumps = CoreDumps::into(cores.path());
    for signal in [libc::SIGSEGV, libc::SIGABRT] {
        let pool = TestPool::new();
        let spec = include_str!("fixtures/projected.yaml").replace("aHVudGVyMg==", "YzByZS1kdW1wLWNhbmFyeS04ZjFkMmU=");
        assert!(spec.contains("YzByZS1k"), "the fixture's secret was replaced");
        let spec_path = pool.root().join("spec.yaml");
        fs::write(&spec_path, &spec).unwrap();
        let mnt = pool.fresh_dir();
        pool.ok(&["project", "mount", spec_path.to_str().unwrap(), mnt.to_str().unwrap()]);
        assert_eq!(fs::read(mnt.join("password")).unwrap(), SECRET);
        // The spec file is the test's own; the daemon must not have copied the secret anywhere.
        fs::remove_file(&spec_path).unwrap();
        let pid = pool.daemon_pid().expect("a daemon serves the tree");
        // Rust's runtime handles the first SIGSEGV (it looks for a stack overflow) and restores
        // the default action, so the signal may need to come twice, as a real fault would.
        let died = (0..3).any(|_| {
            // SAFETY: signals the daemon this test started.
            unsafe { libc::kill(pid, signal) };
            common::wait_pid_exit(pid, Duration::from_secs(2))
        });
        assert!(died, "the daemon survived signal {signal}");
        common::lazy_unmount(&mnt);
        assert_eq!(fs::read_dir(cores.path()).unwrap().count(), 0, "signal {signal} left a core file");
        let leaks = found_below(pool.root(), SECRET);
        assert!(leaks.is_empty(), "signal {signal}: the secret is on disk in {leaks:?}");
    }
}

#[test]
fn at_trace_level_no_secret_file_content_or_xattr_value_is_logged() {
    const CONTENT: &[u8] = b"file-content-canary-51c3";
    const XATTR: &[u8] = b"xattr-value-canary-77ab";
    let pool = TestPool::new();
    pool.create_volume("logged", Some("64Mi"));
    let spec = include_str!("fixtures/projected.yaml").replace("aHVudGVyMg==", "YzByZS1kdW1wLWNhbmFyeS04ZjFkMmU=");
    let spec_path = pool.root().join("spec.yaml");
    fs::write(&spec_path, &spec).unwrap();
    let tree = pool.fresh_dir();
    let mut mount = pool.command(&["project", "mount", spec_path.to_str().unwrap(), tree.to_str().unwrap()]);
    // The daemon this starts logs everything it can.
    mount.env("VOLFS_LOG", "trace");
    assert!(common::run_bounded(mount).status.success(), "{}", pool.daemon_log());
    assert_eq!(fs::read(tree.join("password")).unwrap(), SECRET);
    let spec_again = pool.root().join("again.yaml");
    fs::write(&spec_again, spec.replace("log: info", "log: debug")).unwrap();
    pool.ok(&["project", "update", tree.to_str().unwrap(), spec_again.to_str().unwrap()]);
    for opts in [common::MountOpts::default(), common::MountOpts::mode(common::Mode::NoPassthrough)] {
        let m = pool.mount("logged", opts);
        let file = m.join("f");
        fs::write(&file, CONTENT).unwrap();
        assert_eq!(fs::read(&file).unwrap(), CONTENT);
        let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: valid C strings and a buffer of the given length.
        let set = unsafe { libc::setxattr(path.as_ptr(), c"user.k".as_ptr(), XATTR.as_ptr().cast(), XATTR.len(), 0) };
        assert_eq!(set, 0, "setxattr: {}", std::io::Error::last_os_error());
        let mut buf = [0u8; 64];
        // SAFETY: as above.
        let got = unsafe { libc::getxattr(path.as_ptr(), c"user.k".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..got as usize], XATTR);
    }
    pool.ok(&["umount", tree.to_str().unwrap()]);
    assert!(pool.shutdown());
    let log = pool.daemon_log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the daemon did not log at trace level: {log}");
    let encoded: &[u8] = b"YzByZS1kdW1wLWNhbmFyeS04ZjFkMmU=";
    for (what, canary) in
        [("a secret", SECRET), ("a secret, encoded", encoded), ("file content", CONTENT), ("an xattr value", XATTR)]
    {
        let text = String::from_utf8_lossy(canary);
        assert!(!log.contains(&*text), "{what} is in the daemon's log");
    }
}
