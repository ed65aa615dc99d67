//! Capacity and usage through a real mount: ENOSPC at the exact byte, holes free, usage exact
//! for links, truncate, fallocate, punched holes and files unlinked while open, df after a
//! resize, and usage kept across an orderly stop and a SIGKILL.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::{cvt, errno_of, Mode, MountOpts, TestPool};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Size, used and available bytes as `df` shows them.
fn df(path: &Path) -> (u64, u64, u64) {
    let c = common::cpath(path);
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let f = st.f_frsize;
    (st.f_blocks * f, (st.f_blocks - st.f_bfree) * f, st.f_bavail * f)
}

fn used(path: &Path) -> u64 {
    df(path).1
}

/// The kernel sends a file's release after close returns, so what a last close frees shows a
/// moment later.
fn used_after_release(path: &Path, expected: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = used(path);
        if now == expected || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn pwrite(file: &File, data: &[u8], offset: u64) -> std::io::Result<usize> {
    // SAFETY: data is a valid buffer of its length.
    cvt(unsafe { libc::pwrite(file.as_raw_fd(), data.as_ptr().cast(), data.len(), offset as i64) }).map(|n| n as usize)
}

fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    cvt(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) }).map(drop)
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap()
}

fn fsck_clean(pool: &TestPool) {
    let report = pool.json(&["fsck"]);
    assert_eq!(report["problems"], serde_json::json!([]), "fsck: {report}");
}

#[test]
fn a_write_past_capacity_stops_at_the_exact_byte() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(df(m.path()), (MIB, 0, MIB));
    let f = open_rw(&m.join("f"));
    // One write asking for a block more than there is: all that fits, then nothing.
    let n = pwrite(&f, &vec![1u8; (MIB + 4 * KIB) as usize], 0).unwrap();
    assert_eq!(n as u64, MIB, "the write should stop at the capacity");
    assert_eq!(errno_of("write past capacity", pwrite(&f, b"x", MIB)), libc::ENOSPC);
    let g = open_rw(&m.join("g"));
    assert_eq!(errno_of("write to a full volume", pwrite(&g, b"x", 0)), libc::ENOSPC);
    assert_eq!(fs::metadata(m.join("f")).unwrap().len(), MIB, "no byte past capacity was stored");
    assert_eq!(fs::metadata(m.join("g")).unwrap().len(), 0);
    assert_eq!(df(m.path()), (MIB, MIB, 0));
    // Overwriting what is allocated needs no room.
    assert_eq!(pwrite(&f, &[2u8; 4096], 8192).unwrap(), 4096);
    assert_eq!(fs::read(m.join("f")).unwrap()[8192..8192 + 4096], [2u8; 4096]);
    drop((f, g));
    fsck_clean(&pool);
}

#[test]
fn a_write_straddling_the_limit_keeps_the_blocks_that_fit() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("64Ki"));
    let m = pool.mount("a", MountOpts::default());
    let f = open_rw(&m.join("f"));
    // 10 bytes into the last free block's neighbour: starts at 60 KiB + 100 and runs 8 KiB.
    assert_eq!(pwrite(&f, &[3u8; 4096], 0).unwrap(), 4096);
    let n = pwrite(&f, &vec![4u8; 70 * KIB as usize], 4096).unwrap();
    assert_eq!(n as u64, 60 * KIB);
    assert_eq!(used(m.path()), 64 * KIB);
    let data = fs::read(m.join("f")).unwrap();
    assert_eq!(data.len() as u64, 64 * KIB);
    assert!(data[4096..].iter().all(|&b| b == 4));
}

#[test]
fn holes_cost_nothing_and_writing_into_them_does() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    let f = open_rw(&m.join("sparse"));
    f.set_len(10 << 30).unwrap();
    assert_eq!(used(m.path()), 0, "truncate-extend of a sparse file is free");
    assert_eq!(pwrite(&f, &vec![5u8; MIB as usize], 5 << 30).unwrap() as u64, MIB);
    assert_eq!(used(m.path()), MIB);
    assert_eq!(errno_of("write into a hole of a full volume", pwrite(&f, b"y", 1 << 30)), libc::ENOSPC);
    f.set_len(5 << 30).unwrap();
    assert_eq!(used(m.path()), 0, "truncating away the data frees it");
    assert_eq!(pwrite(&f, b"z", 0).unwrap(), 1);
    assert_eq!(used(m.path()), 4 * KIB, "a partial block costs a block");
    drop(f);
    fsck_clean(&pool);
}

#[test]
fn fallocate_past_capacity_fails_whole_and_punching_frees() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    let f = open_rw(&m.join("f"));
    assert_eq!(errno_of("fallocate past capacity", fallocate(&f, 0, 0, 2 * MIB)), libc::ENOSPC);
    assert_eq!(f.metadata().unwrap().blocks(), 0, "a failed fallocate allocated nothing");
    assert_eq!(f.metadata().unwrap().len(), 0);
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, MIB).unwrap();
    assert_eq!(used(m.path()), MIB);
    assert_eq!(errno_of("fallocate on a full volume", fallocate(&f, 0, MIB, 4096)), libc::ENOSPC);
    // The preallocated range takes writes without more room.
    assert_eq!(pwrite(&f, &vec![6u8; MIB as usize], 0).unwrap() as u64, MIB);
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, 512 * KIB).unwrap();
    assert_eq!(used(m.path()), 512 * KIB);
    let g = open_rw(&m.join("g"));
    fallocate(&g, 0, 0, 512 * KIB).unwrap();
    assert_eq!(used(m.path()), MIB);
    assert_eq!(
        errno_of("zero range on a full volume", fallocate(&g, libc::FALLOC_FL_ZERO_RANGE, MIB, 4096)),
        libc::ENOSPC
    );
    drop((f, g));
    fsck_clean(&pool);
}

#[test]
fn copy_file_range_into_a_full_volume_copies_what_fits() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("256Ki"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("src"), vec![8u8; 200 * KIB as usize]).unwrap();
    let src = File::open(m.join("src")).unwrap();
    let dst = open_rw(&m.join("dst"));
    let (mut off_in, mut off_out) = (0i64, 0i64);
    // SAFETY: both descriptors are open; the offsets are ours.
    let n = unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, 200 * KIB as usize, 0)
    };
    assert_eq!(n as u64, 56 * KIB, "copy_file_range should stop at the capacity");
    assert_eq!(used(m.path()), 256 * KIB);
    assert_eq!(fs::read(m.join("dst")).unwrap(), vec![8u8; 56 * KIB as usize]);
}

#[test]
fn usage_is_exact_for_links_truncate_and_files_unlinked_while_open() {
    for mode in [Mode::Passthrough, Mode::NoPassthrough] {
        for capacity in [None, Some("1Gi")] {
            let pool = TestPool::new();
            pool.create_volume("a", capacity);
            let m = pool.mount("a", MountOpts::mode(mode));
            let what = format!("{mode:?}, capacity {capacity:?}");
            fs::write(m.join("f"), vec![1u8; 100 * KIB as usize]).unwrap();
            assert_eq!(used(m.path()), 100 * KIB, "{what}");
            fs::hard_link(m.join("f"), m.join("g")).unwrap();
            assert_eq!(used(m.path()), 100 * KIB, "{what}: a hard link costs nothing");
            fs::remove_file(m.join("f")).unwrap();
            assert_eq!(used(m.path()), 100 * KIB, "{what}: one name of two removed");
            let open = File::open(m.join("g")).unwrap();
            fs::remove_file(m.join("g")).unwrap();
            assert_eq!(used(m.path()), 100 * KIB, "{what}: an open unlinked file still holds its blocks");
            drop(open);
            assert_eq!(used_after_release(m.path(), 0), 0, "{what}: the last close frees them");
            fs::write(m.join("keep"), vec![3u8; 40 * KIB as usize]).unwrap();
            let h = open_rw(&m.join("h"));
            h.write_all_at(&vec![2u8; 300 * KIB as usize], 0).unwrap();
            assert_eq!(used(m.path()), 340 * KIB, "{what}: while open for writing");
            h.set_len(10 * KIB).unwrap();
            assert_eq!(used(m.path()), 52 * KIB, "{what}: after truncate");
            drop(h);
            assert_eq!(used_after_release(m.path(), 52 * KIB), 52 * KIB, "{what}: after close");
            assert_eq!(pool.json(&["volume", "inspect", "a"])["used_bytes"], 52 * KIB, "{what}");
            fsck_clean(&pool);
        }
    }
}

#[test]
fn resize_makes_room_at_once() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    let f = open_rw(&m.join("f"));
    assert_eq!(pwrite(&f, &vec![1u8; MIB as usize], 0).unwrap() as u64, MIB);
    assert_eq!(errno_of("write to a full volume", pwrite(&f, b"x", MIB)), libc::ENOSPC);
    pool.ok(&["volume", "resize", "a", "--capacity", "2Mi"]);
    assert_eq!(df(m.path()), (2 * MIB, MIB, MIB));
    assert_eq!(pwrite(&f, &vec![1u8; MIB as usize], MIB).unwrap() as u64, MIB);
    assert_eq!(errno_of("write after the grown volume filled", pwrite(&f, b"x", 2 * MIB)), libc::ENOSPC);
    let out = pool.run(&["volume", "resize", "a", "--capacity", "1Mi"]);
    assert!(!out.status.success(), "shrinking below what is used must fail");
    assert_eq!(df(m.path()).0, 2 * MIB);
}

#[test]
fn usage_survives_an_orderly_stop_and_a_kill() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("10Mi"));
    {
        let m = pool.mount("a", MountOpts::default());
        fs::write(m.join("f"), vec![1u8; 3 * MIB as usize]).unwrap();
        let f = open_rw(&m.join("g"));
        f.set_len(100 * MIB).unwrap();
        f.write_all_at(b"tail", 99 * MIB).unwrap();
        f.sync_all().unwrap();
        File::open(m.join("f")).unwrap().sync_all().unwrap();
    }
    assert!(pool.shutdown());
    let expected = 3 * MIB + 4 * KIB;
    assert_eq!(pool.json(&["volume", "inspect", "a"])["used_bytes"], expected, "after an orderly stop");
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(used(m.path()), expected);
    fs::write(m.join("h"), vec![2u8; MIB as usize]).unwrap();
    File::open(m.join("h")).unwrap().sync_all().unwrap();
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(common::wait_pid_exit(pid, std::time::Duration::from_secs(10)));
    drop(m);
    fsck_clean(&pool);
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(used(m.path()), expected + MIB, "usage recounted after the kill");
    fsck_clean(&pool);
}

#[test]
fn a_first_capacity_waits_until_no_file_is_open_with_passthrough() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let m = pool.mount("a", MountOpts::default());
    let open = open_rw(&m.join("f"));
    let out = pool.run(&["volume", "resize", "a", "--capacity", "1Mi"]);
    common::assert_fails_naming(&out, "a capacity while a passthrough file is open", &["volume a", "passthrough"]);
    assert_eq!(pool.json(&["volume", "inspect", "a"])["capacity"], serde_json::Value::Null);
    drop(open);
    // The kernel releases a closed file a moment after close returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pool.run(&["volume", "resize", "a", "--capacity", "1Mi"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "resize still refused after the file was closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // From now on the daemon holds writes to the capacity.
    let f = open_rw(&m.join("f"));
    assert_eq!(pwrite(&f, &vec![1u8; (2 * MIB) as usize], 0).unwrap() as u64, MIB);
    assert_eq!(errno_of("write past the new capacity", pwrite(&f, b"x", MIB)), libc::ENOSPC);
}

/// Inodes total and free, as `df -i` shows them.
fn df_i(path: &Path) -> (u64, u64) {
    let c = common::cpath(path);
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_files, st.f_ffree)
}

/// Creates files named `prefix0`, `prefix1`, ... until one fails; returns how many were made
/// and the errno that stopped it.
fn create_until_full(dir: &Path, prefix: &str) -> (u64, i32) {
    for n in 0.. {
        if let Err(e) = File::create(dir.join(format!("{prefix}{n}"))) {
            return (n, e.raw_os_error().expect("errno"));
        }
    }
    unreachable!()
}

#[test]
fn a_volume_holds_one_inode_per_16k_of_capacity_and_others_keep_working() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    let other = pool.mount("b", MountOpts::default());
    assert_eq!(df_i(m.path()), (64, 63), "1 MiB / 16 KiB, the root taken");
    fs::create_dir(m.join("d")).unwrap();
    let (made, errno) = create_until_full(&m.join("d"), "f");
    assert_eq!((made, errno), (62, libc::ENOSPC), "a loop of creates stops at the limit");
    assert_eq!(df_i(m.path()), (64, 0));
    for (what, r) in [
        ("mkdir", fs::create_dir(m.join("e"))),
        ("symlink", std::os::unix::fs::symlink("x", m.join("l"))),
        // SAFETY: mkfifo on a valid path.
        ("mkfifo", cvt(unsafe { libc::mkfifo(common::cpath(&m.join("p")).as_ptr(), 0o644) }).map(drop)),
    ] {
        assert_eq!(errno_of(what, r), libc::ENOSPC, "{what}");
    }
    // A hard link is no new inode; the other volume is not limited by this one.
    fs::hard_link(m.join("d/f0"), m.join("link")).unwrap();
    for n in 0..100 {
        File::create(other.join(format!("g{n}"))).unwrap();
    }
    fs::remove_file(m.join("d/f1")).unwrap();
    File::create(m.join("again")).unwrap();
    let info = pool.json(&["volume", "inspect", "a"]);
    assert_eq!((info["inodes"].as_u64(), info["inode_limit"].as_u64()), (Some(64), Some(64)));
    assert_eq!(info["inodes_free"].as_u64(), Some(0));
    fsck_clean(&pool);
}

#[test]
fn inodes_given_at_create_bound_a_volume_with_or_without_capacity() {
    let pool = TestPool::new();
    pool.ok(&["volume", "create", "small", "--inodes", "10"]);
    pool.ok(&["volume", "create", "big", "--capacity", "1Mi", "--inodes", "1000"]);
    for (volume, limit) in [("small", 10), ("big", 1000)] {
        let m = pool.mount(volume, MountOpts::default());
        assert_eq!(df_i(m.path()), (limit, limit - 1), "{volume}");
        assert_eq!(create_until_full(m.path(), "f"), (limit - 1, libc::ENOSPC), "{volume}");
    }
    // Asking again with another limit is refused; the same one answers the volume.
    pool.ok(&["volume", "create", "small", "--inodes", "10"]);
    let out = pool.run(&["volume", "create", "small", "--inodes", "11"]);
    common::assert_fails_naming(&out, "another limit", &["small", "10 inodes"]);
    for bad in ["0", "ten", "1Ki", "1.5"] {
        let out = pool.run(&["volume", "create", "c", "--inodes", bad]);
        common::assert_fails_naming(&out, "bad --inodes", &["--inodes", bad]);
    }
    // Without a capacity or a limit, only the pool bounds a volume's inodes.
    let m = pool.mount("unbounded", MountOpts::default());
    assert!(df_i(m.path()).1 >= 1 << 20);
    assert_eq!(pool.json(&["volume", "inspect", "unbounded"])["inode_limit"], serde_json::Value::Null);
    fsck_clean(&pool);
}

#[test]
fn resizes_and_clones_keep_the_inodes_a_volume_holds() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Mi"));
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(create_until_full(m.path(), "f").0, 63);
    // Growing the capacity grows the default limit, as resize2fs does; shrinking below what
    // the volume holds is refused.
    pool.ok(&["volume", "resize", "a", "--capacity", "2Mi"]);
    assert_eq!(df_i(m.path()), (128, 64));
    File::create(m.join("more")).unwrap();
    let out = pool.run(&["volume", "resize", "a", "--capacity", "1Mi"]);
    common::assert_fails_naming(&out, "shrink below the inodes", &["a", "65 inodes"]);
    // A snapshot and a clone hold what the source held, against the source's limit.
    pool.ok(&["snapshot", "create", "a", "s"]);
    pool.ok(&["volume", "create", "c", "--from-snapshot", "a@s"]);
    let c = pool.mount("c", MountOpts::default());
    assert_eq!(df_i(c.path()), (128, 63));
    let out = pool.run(&["volume", "create", "d", "--from-volume", "a", "--inodes", "20"]);
    common::assert_fails_naming(&out, "clone with too few inodes", &["65 inodes"]);
    fsck_clean(&pool);
}

/// setxattr's outcome: "ok" or the errno's text.
fn try_setxattr(path: &Path, name: &str, len: usize) -> String {
    let (c, n) = (common::cpath(path), std::ffi::CString::new(name).unwrap());
    let value = vec![b'v'; len];
    // SAFETY: valid C strings and a buffer of `len` bytes.
    match cvt(unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), len, 0) }) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

/// The same setxattr calls on a file on ext4 (the root file system, with mke2fs's defaults)
/// and on a volfs file: one value up to the block's room, many small ones until the inode is
/// full, over-long names and values, and room again after a remove.
#[test]
fn an_inode_holds_as_many_xattrs_as_on_ext4() {
    let run = |dir: &Path| -> Vec<String> {
        let f = dir.join("x");
        File::create(&f).unwrap();
        let mut out = Vec::new();
        for len in [4040, 4044, 65536, 65537] {
            out.push(try_setxattr(&f, "user.x", len));
        }
        out.push(try_setxattr(&f, &format!("user.{}", "n".repeat(251)), 1));
        let mut n = 0;
        let stopped = loop {
            match try_setxattr(&f, &format!("user.k{n:03}"), 4) {
                r if r == "ok" => n += 1,
                r => break r,
            }
        };
        out.push(format!("{n} small values, then {stopped}"));
        fs::remove_file(&f).unwrap();
        File::create(&f).unwrap();
        for name in ["user.a", "user.b"] {
            out.push(try_setxattr(&f, name, 2000));
        }
        out.push(try_setxattr(&f, "user.c", 100));
        let c = std::ffi::CString::new("user.a").unwrap();
        // SAFETY: valid C strings.
        cvt(unsafe { libc::lremovexattr(common::cpath(&f).as_ptr(), c.as_ptr()) }).unwrap();
        out.push(try_setxattr(&f, "user.c", 100));
        out
    };
    let native = tempfile::tempdir_in("/tmp").unwrap();
    let want = run(native.path());
    assert_eq!(want[0], "ok");
    assert_eq!(want[1], std::io::Error::from_raw_os_error(libc::ENOSPC).to_string(), "ext4 here has 4 KiB blocks");
    let pool = TestPool::new();
    for capacity in [None, Some("1Gi")] {
        let name = if capacity.is_some() { "daemon-io" } else { "passthrough" };
        pool.create_volume(name, capacity);
        let m = pool.mount(name, MountOpts::default());
        assert_eq!(run(m.path()), want, "{name}: volfs (left) and ext4 (right)");
    }
}
