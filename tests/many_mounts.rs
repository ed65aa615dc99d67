//! A node's worth of mounts on one daemon: 1,000 subPath mounts of a few volumes at once, each
//! answering with its own directory's bytes, then all unmounted; the daemon's threads and
//! memory read from /proc before, at the peak and after.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{MountOpts, TestPool};

const VOLUMES: usize = 4;
const MOUNTS: usize = 1000;
/// What an idle mount may cost the daemon in resident memory.
const MIB_PER_IDLE_MOUNT: u64 = 1;
/// What the allocator may keep after every mount is gone (its arenas' high-water mark, which
/// does not grow from one round of mounts to the next).
const MIB_KEPT_AFTER: u64 = 64;

/// The daemon's thread count and resident memory in KiB, from /proc/PID/status.
fn threads_and_rss_kib(pid: i32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the daemon's status");
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    (field("Threads:"), field("VmRSS:"))
}

#[test]
fn a_thousand_mounts_answer_at_once_and_leave_nothing_behind() {
    let pool = TestPool::new();
    let volume = |v: usize| format!("vol{v}");
    for v in 0..VOLUMES {
        let full = pool.mount(&volume(v), MountOpts::default());
        for d in (v..MOUNTS).step_by(VOLUMES) {
            fs::create_dir(full.join(format!("d{d}"))).unwrap();
            fs::write(full.join(format!("d{d}/who")), format!("{}/d{d}", volume(v))).unwrap();
        }
        full.unmount();
    }
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    let (threads_before, rss_before) = threads_and_rss_kib(pid);

    let mountpoints: Vec<PathBuf> = (0..MOUNTS)
        .map(|d| {
            let at = pool.fresh_dir();
            let sub = format!("d{d}");
            pool.ok(&["mount", &volume(d % VOLUMES), at.to_str().unwrap(), "--subpath", &sub]);
            at
        })
        .collect();
    assert_eq!(pool.json(&["mounts"]).as_array().unwrap().len(), MOUNTS, "every mount is listed");
    for (d, at) in mountpoints.iter().enumerate() {
        let who = fs::read_to_string(at.join("who")).unwrap_or_else(|e| panic!("reading {}: {e}", at.display()));
        assert_eq!(who, format!("{}/d{d}", volume(d % VOLUMES)), "{} shows its own directory", at.display());
    }
    let (threads_peak, rss_peak) = threads_and_rss_kib(pid);
    let per_mount_kib = rss_peak.saturating_sub(rss_before) / MOUNTS as u64;
    eprintln!(
        "{MOUNTS} mounts: threads {threads_before} -> {threads_peak}, resident {} -> {} MiB ({per_mount_kib} KiB per mount)",
        rss_before / 1024,
        rss_peak / 1024
    );
    assert!(
        per_mount_kib <= MIB_PER_IDLE_MOUNT * 1024,
        "an idle mount costs {per_mount_kib} KiB of resident memory (at most {MIB_PER_IDLE_MOUNT} MiB)"
    );

    for at in &mountpoints {
        pool.ok(&["umount", at.to_str().unwrap()]);
    }
    assert_eq!(pool.json(&["mounts"]), serde_json::json!([]), "nothing is left mounted");
    let (threads_after, rss_after) = threads_and_rss_kib(pid);
    eprintln!("after unmounting: threads {threads_after}, resident {} MiB", rss_after / 1024);
    assert_eq!(threads_after, threads_before, "every mount's threads ended with it");
    assert!(
        rss_after <= rss_before + MIB_KEPT_AFTER * 1024,
        "resident memory went from {} to {} MiB after unmounting everything",
        rss_before / 1024,
        rss_after / 1024
    );
}
