//! A node's worth of mounts on one daemon: 1,000 mounts at once — subPath mounts of a few
//! volumes, whole volumes, snapshots and projected trees — each answering with its own bytes,
//! then all unmounted; the daemon's threads and memory read from /proc before, at the peak and
//! after.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{MountOpts, TestPool};

const VOLUMES: usize = 4;
const MOUNTS: usize = 1000;
/// One mount in this many is a whole volume, one a snapshot, one a projected tree; the rest
/// are subPath mounts.
const KINDS_EVERY: usize = 50;
const PROJECTED_SPEC: &str = include_str!("fixtures/projected.yaml");
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
        pool.ok(&["snapshot", "create", &volume(v), "s"]);
    }
    let spec = pool.root().join("projected.yaml");
    fs::write(&spec, PROJECTED_SPEC).unwrap();
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    let (threads_before, rss_before) = threads_and_rss_kib(pid);

    // Each mount with a file it shows and that file's bytes.
    let mountpoints: Vec<(PathBuf, PathBuf, String)> = (0..MOUNTS)
        .map(|d| {
            let at = pool.fresh_dir();
            let (vol, own) = (volume(d % VOLUMES), format!("d{d}/who"));
            let at_str = at.to_str().unwrap();
            let shown = match d % KINDS_EVERY {
                0 => {
                    pool.ok(&["mount", &vol, at_str]);
                    at.join(&own)
                }
                1 => {
                    pool.ok(&["mount", &format!("{vol}@s"), at_str]);
                    at.join(&own)
                }
                2 => {
                    pool.ok(&["project", "mount", spec.to_str().unwrap(), at_str]);
                    return (at.clone(), at.join("password"), "hunter2".to_string());
                }
                _ => {
                    pool.ok(&["mount", &vol, at_str, "--subpath", &format!("d{d}")]);
                    at.join("who")
                }
            };
            (at, shown, format!("{vol}/d{d}"))
        })
        .collect();
    assert_eq!(pool.json(&["mounts"]).as_array().unwrap().len(), MOUNTS, "every mount is listed");
    for (at, shown, bytes) in &mountpoints {
        let read = fs::read_to_string(shown).unwrap_or_else(|e| panic!("reading {}: {e}", shown.display()));
        assert_eq!(&read, bytes, "{} shows its own bytes", at.display());
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
    // One pool of workers serves every mount: no thread per mount.
    assert!(
        threads_peak < threads_before + 20,
        "{MOUNTS} mounts took the daemon from {threads_before} to {threads_peak} threads"
    );

    for (at, _, _) in &mountpoints {
        pool.ok(&["umount", at.to_str().unwrap()]);
    }
    assert_eq!(pool.json(&["mounts"]), serde_json::json!([]), "nothing is left mounted");
    // Workers started while reads waited on the disk leave once idle for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (threads_after, rss_after) = loop {
        let (threads, rss) = threads_and_rss_kib(pid);
        if threads <= threads_before || Instant::now() > deadline {
            break (threads, rss);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("after unmounting: threads {threads_after}, resident {} MiB", rss_after / 1024);
    assert_eq!(threads_after, threads_before, "the daemon is back to its threads before the mounts");
    assert!(
        rss_after <= rss_before + MIB_KEPT_AFTER * 1024,
        "resident memory went from {} to {} MiB after unmounting everything",
        rss_before / 1024,
        rss_after / 1024
    );
}
