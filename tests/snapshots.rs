//! Snapshots, clones and restores through real mounts: isolation both ways (data, sizes,
//! names, xattrs, hard links, symlinks, renamed directories), exactly the writes completed
//! before the cut, fio verify under snapshots, independence of clones and restores, space
//! returned on delete, and bad input.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_fails_naming, errno_of, Mount, MountOpts, TestPool};

const MIB: u64 = 1 << 20;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (common::cpath(path), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given size.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (common::cpath(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid C strings and a value of the given size.
    assert_eq!(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) }, 0);
}

fn remove_xattr(path: &Path, name: &str) {
    let (p, n) = (common::cpath(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }, 0);
}

/// Mounts a snapshot (or any existing view) on a fresh directory.
fn mount_view<'a>(pool: &'a TestPool, name: &str) -> Mount<'a> {
    let at = pool.fresh_dir();
    pool.mount_at(name, &at, MountOpts::default())
}

/// Bytes of data blocks the pool's data files hold on disk.
fn pool_data_bytes(pool: &TestPool) -> u64 {
    let mut total = 0;
    for shard in fs::read_dir(pool.path().join("data")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().blocks() * 512;
        }
    }
    total
}

fn fsck_clean(pool: &TestPool) -> serde_json::Value {
    let report = pool.json(&["fsck"]);
    assert_eq!(report["problems"], serde_json::json!([]), "fsck: {report}");
    assert_eq!(report["reclaimable"], serde_json::json!([]), "fsck: {report}");
    report
}

/// Every name below `root` with what it is: file bytes, link target or "dir".
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = rel.join(e.file_name());
            let path = root.join(&name);
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(name.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned()
            };
            out.insert(name.display().to_string(), what);
        }
    }
    out
}

/// Builds a tree with every kind of thing a snapshot must keep.
fn populate(root: &Path) {
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("f"), b"original").unwrap();
    fs::write(root.join("d/e/deep"), b"deep").unwrap();
    fs::hard_link(root.join("f"), root.join("d/hard")).unwrap();
    std::os::unix::fs::symlink("d/e/deep", root.join("link")).unwrap();
    let sparse = File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    sparse.write_all_at(b"end", 64 * MIB - 3).unwrap();
    set_xattr(&root.join("f"), "user.k", b"v1");
    set_xattr(&root.join("d"), "user.dir", b"x");
    fs::set_permissions(root.join("d/e/deep"), fs::Permissions::from_mode(0o640)).unwrap();
}

/// Changes every kind of thing `populate` made.
fn change(root: &Path) {
    fs::write(root.join("f"), b"changed, longer than before").unwrap();
    fs::rename(root.join("d"), root.join("renamed")).unwrap();
    fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink("f", root.join("link")).unwrap();
    File::options().write(true).open(root.join("sparse")).unwrap().set_len(10).unwrap();
    set_xattr(&root.join("f"), "user.k", b"v2");
    remove_xattr(&root.join("renamed"), "user.dir");
    fs::set_permissions(root.join("renamed/e/deep"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(root.join("new"), b"new").unwrap();
}

fn assert_populated(root: &Path, what: &str) {
    assert_eq!(fs::read(root.join("f")).unwrap(), b"original", "{what}: data");
    assert_eq!(fs::read(root.join("d/hard")).unwrap(), b"original", "{what}: hard link");
    assert_eq!(fs::metadata(root.join("f")).unwrap().nlink(), 2, "{what}: nlink");
    assert_eq!(fs::metadata(root.join("f")).unwrap().ino(), fs::metadata(root.join("d/hard")).unwrap().ino());
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("d/e/deep"), "{what}: symlink");
    assert_eq!(fs::read(root.join("link")).unwrap(), b"deep", "{what}: through the symlink");
    assert_eq!(fs::metadata(root.join("sparse")).unwrap().len(), 64 * MIB, "{what}: size");
    assert!(fs::metadata(root.join("sparse")).unwrap().blocks() < 64, "{what}: holes stay holes");
    assert_eq!(xattr(&root.join("f"), "user.k").unwrap(), b"v1", "{what}: xattr");
    assert_eq!(xattr(&root.join("d"), "user.dir").unwrap(), b"x", "{what}: dir xattr");
    assert_eq!(fs::metadata(root.join("d/e/deep")).unwrap().mode() & 0o777, 0o640, "{what}: mode");
    assert!(!root.join("renamed").exists() && !root.join("new").exists(), "{what}: later names");
}

fn assert_changed(root: &Path, what: &str) {
    assert_eq!(fs::read(root.join("f")).unwrap(), b"changed, longer than before", "{what}");
    assert_eq!(fs::read(root.join("renamed/hard")).unwrap(), b"changed, longer than before", "{what}");
    assert!(!root.join("d").exists(), "{what}");
    assert_eq!(fs::read_link(root.join("link")).unwrap(), Path::new("f"), "{what}");
    assert_eq!(fs::metadata(root.join("sparse")).unwrap().len(), 10, "{what}");
    assert_eq!(xattr(&root.join("f"), "user.k").unwrap(), b"v2", "{what}");
    assert_eq!(xattr(&root.join("renamed"), "user.dir"), None, "{what}");
    assert_eq!(fs::metadata(root.join("renamed/e/deep")).unwrap().mode() & 0o777, 0o600, "{what}");
    assert_eq!(fs::read(root.join("new")).unwrap(), b"new", "{what}");
}

#[test]
fn a_snapshot_keeps_the_tree_as_it_was_while_the_volume_goes_on() {
    for capacity in [Some("1Gi"), None] {
        let pool = TestPool::new();
        pool.create_volume("a", capacity);
        let m = pool.mount("a", MountOpts::default());
        populate(m.path());
        let info = pool.json(&["snapshot", "create", "a", "s1"]);
        assert_eq!(info["name"], "a@s1");
        assert_eq!(info["volume"], "a");
        change(m.path());
        let snap = mount_view(&pool, "a@s1");
        assert_populated(snap.path(), &format!("snapshot, capacity {capacity:?}"));
        assert_changed(m.path(), &format!("volume, capacity {capacity:?}"));
        // Written again after the first change: the volume's own copy takes it.
        fs::write(m.join("f"), b"third").unwrap();
        assert_eq!(fs::read(snap.join("f")).unwrap(), b"original");
        fsck_clean(&pool);
    }
}

#[test]
fn a_snapshot_is_read_only() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    let snap = mount_view(&pool, "a@s");
    assert_eq!(errno_of("create", File::create(snap.join("g"))), libc::EROFS);
    assert_eq!(errno_of("open for write", OpenOptions::new().write(true).open(snap.join("f"))), libc::EROFS);
    assert_eq!(errno_of("unlink", fs::remove_file(snap.join("f"))), libc::EROFS);
    assert_eq!(errno_of("mkdir", fs::create_dir(snap.join("d"))), libc::EROFS);
    let mounts = pool.json(&["mounts"]);
    let listed = mounts.as_array().unwrap().iter().find(|v| v["volume"] == "a@s").expect("snapshot mount listed");
    assert_eq!(listed["read_only"], true);
}

#[test]
fn clones_and_restores_are_independent_of_their_sources() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let a = pool.mount("a", MountOpts::default());
    populate(a.path());
    pool.ok(&["snapshot", "create", "a", "s"]);
    pool.ok(&["volume", "create", "clone", "--from-volume", "a"]);
    pool.ok(&["volume", "create", "restored", "--from-snapshot", "a@s", "--capacity", "2Gi"]);
    assert_eq!(
        pool.json(&["volume", "inspect", "clone"])["capacity"],
        1u64 << 30,
        "a clone takes its source's capacity"
    );
    assert_eq!(pool.json(&["volume", "inspect", "restored"])["capacity"], 2u64 << 30);
    let clone = pool.mount("clone", MountOpts::default());
    let restored = pool.mount("restored", MountOpts::default());
    assert_populated(clone.path(), "clone");
    assert_populated(restored.path(), "restored");
    // Each one changes on its own.
    change(clone.path());
    assert_changed(clone.path(), "clone after change");
    assert_populated(a.path(), "source after the clone changed");
    assert_populated(restored.path(), "restore after the clone changed");
    fs::write(a.join("f"), b"source only").unwrap();
    fs::write(restored.join("f"), b"restore only").unwrap();
    assert_eq!(fs::read(clone.join("f")).unwrap(), b"changed, longer than before");
    assert_eq!(fs::read(a.join("d/hard")).unwrap(), b"source only");
    assert_eq!(fs::read(restored.join("d/hard")).unwrap(), b"restore only");
    let snap = mount_view(&pool, "a@s");
    assert_populated(snap.path(), "snapshot after everyone changed");
    // A second restore of the same snapshot starts from it again.
    pool.ok(&["volume", "create", "again", "--from-snapshot", "a@s"]);
    let again = pool.mount("again", MountOpts::default());
    assert_eq!(tree(again.path()), tree(snap.path()));
    fsck_clean(&pool);
}

/// A block of the consistency test's file: its index and the sequence number of the write
/// that made it, repeated over the block so a torn block shows.
fn block(index: u64, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(4096);
    while b.len() < 4096 {
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    }
    b
}

fn parse_block(b: &[u8]) -> (u64, u64) {
    let index = u64::from_le_bytes(b[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(b[8..16].try_into().unwrap());
    assert!(b.chunks(16).all(|c| c == &b[..16]), "torn block {index}: a write was cut in the middle");
    (index, seq)
}

#[test]
fn a_snapshot_holds_exactly_the_writes_completed_before_it() {
    const BLOCKS: u64 = 256;
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    let file =
        Arc::new(OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.join("f")).unwrap());
    for i in 0..BLOCKS {
        file.write_all_at(&block(i, 0), i * 4096).unwrap();
    }
    // Writes: `started` is bumped before each, `completed` after; `history` has every
    // completed write per block. Files: made one after another, counted the same way.
    let (started, completed, stop) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let history = Arc::new(Mutex::new(vec![vec![0u64]; BLOCKS as usize]));
    let (files_started, files_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (file, started, completed, stop, history) =
            (file.clone(), started.clone(), completed.clone(), stop.clone(), history.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                let index = (seq * 7919) % BLOCKS;
                started.store(seq, Ordering::SeqCst);
                file.write_all_at(&block(index, seq), index * 4096).unwrap();
                history.lock().unwrap()[index as usize].push(seq);
                completed.store(seq, Ordering::SeqCst);
            }
        })
    };
    let creator = {
        let (dir, started, done, stop) =
            (m.path().to_path_buf(), files_started.clone(), files_done.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                started.store(n, Ordering::SeqCst);
                fs::write(dir.join(format!("file{n}")), n.to_le_bytes()).unwrap();
                done.store(n, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (done_before, files_before) = (completed.load(Ordering::SeqCst), files_done.load(Ordering::SeqCst));
    pool.ok(&["snapshot", "create", "a", "cut"]);
    let (begun_after, files_begun_after) = (started.load(Ordering::SeqCst), files_started.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    creator.join().unwrap();
    assert!(done_before > 0 && completed.load(Ordering::SeqCst) > begun_after, "the writer ran across the cut");

    let snap = mount_view(&pool, "a@cut");
    let data = fs::read(snap.join("f")).unwrap();
    assert_eq!(data.len() as u64, BLOCKS * 4096);
    let history = history.lock().unwrap();
    for (i, b) in data.chunks(4096).enumerate() {
        let (index, seq) = parse_block(b);
        assert_eq!(index, i as u64);
        let last_before = history[i].iter().copied().filter(|s| *s <= done_before).max().unwrap();
        assert!(seq >= last_before, "block {i}: holds write {seq}, but write {last_before} completed before the cut");
        assert!(seq <= begun_after, "block {i}: holds write {seq}, begun after the cut returned ({begun_after})");
    }
    for n in 1..=files_before {
        assert_eq!(fs::read(snap.join(format!("file{n}"))).unwrap(), n.to_le_bytes(), "file{n} made before the cut");
    }
    for n in files_begun_after + 1..files_begun_after + 50 {
        assert!(!snap.join(format!("file{n}")).exists(), "file{n} made after the cut");
    }
    fsck_clean(&pool);
}

fn fio(args: &[&str]) {
    let out = Command::new("fio").args(args).output().expect("running fio (apt-get install fio)");
    assert!(
        out.status.success(),
        "fio {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn snapshots_under_concurrent_fio_writes_verify() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("4Gi"));
    let m = pool.mount("a", MountOpts::default());
    let job = |dir: &Path, name: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            format!("--name={name}"),
            format!("--directory={}", dir.display()),
            format!("--filename={name}"),
            "--size=64m".into(),
            "--bs=4k".into(),
            "--verify=crc32c".into(),
            "--ioengine=psync".into(),
            "--verify_state_save=0".into(),
        ]
        .into();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| fio(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // A file written and made durable before any snapshot.
    run(job(m.path(), "before", &["--rw=write", "--do_verify=0", "--end_fsync=1"]));
    // Random writes verified by fio at the end, while snapshots are cut.
    let live = {
        let args = job(m.path(), "live", &["--rw=randwrite", "--loops=3"]);
        std::thread::spawn(move || fio(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        pool.ok(&["snapshot", "create", "a", &format!("s{i}")]);
    }
    live.join().expect("fio verify of the live volume failed");
    run(job(m.path(), "before", &["--rw=write", "--verify_only"]));
    let scratch = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let snap = mount_view(&pool, &format!("a@s{i}"));
        // fio opens a file it verifies for writing: check the snapshot's bytes from a copy.
        fs::copy(snap.join("before"), scratch.path().join("before")).unwrap();
        run(job(scratch.path(), "before", &["--rw=write", "--verify_only"]));
    }
    fsck_clean(&pool);
}

#[test]
fn deleting_a_snapshot_frees_what_only_it_held_and_deleting_a_volume_keeps_its_snapshots() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("big"), vec![1u8; 4 * MIB as usize]).unwrap();
    fs::write(m.join("kept"), b"kept").unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    let files_at_cut = fsck_clean(&pool)["data_files"].as_u64().unwrap();
    let list = pool.json(&["snapshot", "list", "a"]);
    assert_eq!(list[0]["exclusive_bytes"], 0, "nothing is the snapshot's alone yet: {list}");
    assert_eq!(list[0]["size_bytes"], 4 * MIB + 4096);
    // The volume's change takes the first chunk (1 MiB) of the big file into a data file of
    // its own; the shared one's first chunk is the snapshot's alone.
    File::options().write(true).open(m.join("big")).unwrap().write_all_at(b"x", 0).unwrap();
    let list = pool.json(&["snapshot", "list"]);
    assert_eq!(list[0]["exclusive_bytes"], MIB, "{list}");
    assert_eq!(fsck_clean(&pool)["data_files"].as_u64().unwrap(), files_at_cut + 1);
    let on_disk = pool_data_bytes(&pool);
    pool.ok(&["snapshot", "delete", "a@s"]);
    assert_eq!(pool_data_bytes(&pool), on_disk - MIB, "the chunk only the snapshot held is freed");
    fsck_clean(&pool);
    assert_eq!(pool.json(&["snapshot", "list"]), serde_json::json!([]));
    assert_eq!(pool.json(&["volume", "inspect", "a"])["used_bytes"], 4 * MIB + 4096);

    // A volume's snapshots outlive it.
    pool.ok(&["snapshot", "create", "a", "last"]);
    m.unmount();
    pool.ok(&["volume", "delete", "a"]);
    assert!(pool.volume_names().is_empty());
    let snap = mount_view(&pool, "a@last");
    assert_eq!(fs::read(snap.join("kept")).unwrap(), b"kept");
    assert_eq!(fs::read(snap.join("big")).unwrap()[..2], *b"x\x01");
    snap.unmount();
    pool.ok(&["snapshot", "delete", "a@last"]);
    assert_eq!(fsck_clean(&pool)["data_files"], 0, "nothing is left once everything is deleted");
}

#[test]
fn restoring_into_less_than_the_snapshot_holds_is_refused() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), vec![1u8; 2 * MIB as usize]).unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    let out = pool.run(&["volume", "create", "small", "--from-snapshot", "a@s", "--capacity", "1Mi"]);
    assert_fails_naming(&out, "restore into 1Mi", &["a@s", "holds"]);
    assert!(!pool.volume_names().contains(&"small".to_string()));
    pool.ok(&["volume", "create", "big", "--from-snapshot", "a@s", "--capacity", "3Mi"]);
    let big = pool.mount("big", MountOpts::default());
    assert_eq!(fs::read(big.join("f")).unwrap().len() as u64, 2 * MIB);
}

#[test]
fn bad_snapshot_requests_fail_clearly_and_change_nothing() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    pool.create_volume("b", None);
    pool.ok(&["snapshot", "create", "a", "s"]);
    let cases: &[(&[&str], &[&str])] = &[
        (&["snapshot", "create", "nope", "s"], &["nope"]),
        (&["snapshot", "create", "a", "Bad_Name"], &["Bad_Name"]),
        (&["snapshot", "delete", "a@nope"], &["a@nope"]),
        (&["snapshot", "delete", "a"], &["VOLUME@SNAPSHOT"]),
        (&["snapshot", "delete", "a@s@t"], &["a@s@t"]),
        (&["snapshot", "list", "nope"], &["nope"]),
        (&["volume", "create", "b", "--from-snapshot", "a@s"], &["b", "exists"]),
        (&["volume", "create", "c", "--from-snapshot", "a@nope"], &["a@nope"]),
        (&["volume", "create", "c", "--from-snapshot", "a"], &["VOLUME@SNAPSHOT"]),
        (&["volume", "create", "c", "--from-volume", "nope"], &["nope"]),
        (&["volume", "create", "c", "--from-volume", "a@s"], &["a@s"]),
        (&["volume", "create", "c", "--from-snapshot", "a@s", "--capacity", "0"], &["--capacity"]),
        (&["volume", "create", "c", "--from-snapshot", "a@s", "--capacity", "1x"], &["--capacity", "1x"]),
        (&["volume", "delete", "a@s"], &["a@s", "snapshot"]),
        (&["volume", "resize", "a@s", "--capacity", "2Gi"], &["a@s"]),
    ];
    for (args, names) in cases {
        assert_fails_naming(&pool.run(args), &format!("{args:?}"), names);
    }
    let snap = mount_view(&pool, "a@s");
    assert_fails_naming(&pool.run(&["snapshot", "delete", "a@s"]), "delete while mounted", &["a@s", "mounted"]);
    snap.unmount();
    assert_eq!(pool.volume_names(), ["a", "b"]);
    let list = pool.json(&["snapshot", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "a@s");
    fsck_clean(&pool);
}

#[test]
fn a_volume_without_capacity_is_snapshotted_once_no_file_of_it_is_open_with_passthrough() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), b"data").unwrap();
    let open = File::open(m.join("f")).unwrap();
    let out = pool.run(&["snapshot", "create", "a", "s"]);
    assert_fails_naming(&out, "snapshot with a passthrough file open", &["volume a", "passthrough"]);
    drop(open);
    // The kernel releases a closed file a moment after close returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !pool.run(&["snapshot", "create", "a", "s"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "snapshot still refused after the file was closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Through a mount without passthrough, files may be open at the cut.
    let np = pool.mount("a", MountOpts { passthrough: false, ..MountOpts::default() });
    m.unmount();
    let held = OpenOptions::new().read(true).write(true).open(np.join("f")).unwrap();
    pool.ok(&["snapshot", "create", "a", "t"]);
    held.write_all_at(b"DATA", 0).unwrap();
    let snap = mount_view(&pool, "a@t");
    assert_eq!(fs::read(snap.join("f")).unwrap(), b"data");
    assert_eq!(fs::read(np.join("f")).unwrap(), b"DATA");
}

#[test]
fn df_of_a_snapshot_shows_what_it_holds() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("100Mi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), vec![1u8; 3 * MIB as usize]).unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    fs::remove_file(m.join("f")).unwrap();
    let snap = mount_view(&pool, "a@s");
    let c = common::cpath(snap.path());
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_blocks * st.f_frsize, 100 * MIB);
    assert_eq!((st.f_blocks - st.f_bfree) * st.f_frsize, 3 * MIB);
    assert_eq!(pool.json(&["volume", "inspect", "a"])["used_bytes"], 0, "the volume let go of the file");
    fsck_clean(&pool);
}

#[test]
fn a_subpath_view_of_a_snapshot_shows_that_directory_as_it_was() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::create_dir_all(m.join("site/static")).unwrap();
    fs::write(m.join("site/static/index.html"), b"v1").unwrap();
    fs::write(m.join("secret"), b"outside").unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    fs::write(m.join("site/static/index.html"), b"v2").unwrap();
    let at = pool.fresh_dir();
    let view = pool.mount_at("a@s", &at, MountOpts::subpath("site"));
    assert_eq!(fs::read(view.join("static/index.html")).unwrap(), b"v1");
    assert!(!view.join("secret").exists());
    assert_eq!(errno_of("write", fs::write(view.join("static/index.html"), b"x")), libc::EROFS);
    let out = pool.run(&["mount", "a@s", pool.fresh_dir().to_str().unwrap(), "--subpath", "new/dir", "--create"]);
    assert_fails_naming(&out, "--create in a snapshot", &["a@s"]);
}

#[test]
fn a_file_unlinked_while_open_at_the_cut_leaves_no_trace_in_snapshots_or_clones() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("gone"), vec![1u8; MIB as usize]).unwrap();
    fs::write(m.join("kept"), b"kept").unwrap();
    let open = File::open(m.join("gone")).unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    pool.ok(&["snapshot", "create", "a", "s"]);
    pool.ok(&["volume", "create", "c", "--from-volume", "a"]);
    // The open file, and the clone's copy of it, are reclaimable; nothing is damaged.
    let report = pool.json(&["fsck"]);
    assert_eq!(report["problems"], serde_json::json!([]), "fsck: {report}");
    assert_eq!(report["reclaimable"].as_array().unwrap().len(), 2, "fsck: {report}");
    let c = pool.mount("c", MountOpts::default());
    assert_eq!(tree(c.path()), BTreeMap::from([("kept".to_string(), "kept".to_string())]));
    let mut buf = vec![0u8; 4];
    open.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [1u8; 4]);
    drop(open);
    drop(c);
    drop(m);
    assert!(pool.shutdown());
    // The next start reclaims what the clone inherited of the open file.
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(fs::read(m.join("kept")).unwrap(), b"kept");
    fsck_clean(&pool);
    assert_eq!(pool.json(&["volume", "inspect", "c"])["used_bytes"], 4096);
}
