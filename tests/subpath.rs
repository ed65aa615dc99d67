//! subPath views through the kernel: a mount that shows one directory of a volume and never
//! anything above it.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MountOpts, TestPool};

/// A volume `v` with `a/b/inside`, `a/outside` and a top-level `top`, mounted whole.
fn volume_with_tree(pool: &TestPool) -> common::Mount<'_> {
    pool.create_volume("v", None);
    let full = pool.mount("v", MountOpts::default());
    fs::create_dir_all(full.join("a/b")).unwrap();
    fs::write(full.join("a/b/inside"), b"in").unwrap();
    fs::write(full.join("a/outside"), b"out").unwrap();
    fs::write(full.join("top"), b"top").unwrap();
    full
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn view_shows_only_its_directory() {
    let pool = TestPool::new();
    let _full = volume_with_tree(&pool);
    let view = pool.mount("v", MountOpts::subpath("a/b"));
    assert_eq!(names(view.path()), ["inside"]);
    assert_eq!(fs::read(view.join("inside")).unwrap(), b"in");
    assert!(fs::metadata(view.join("outside")).is_err());
    let listed = pool.json(&["mounts"]);
    assert!(listed.as_array().unwrap().iter().any(|m| m["subpath"] == "a/b"), "{listed}");
}

#[test]
fn dotdot_of_the_view_root_is_the_view_root() {
    let pool = TestPool::new();
    let _full = volume_with_tree(&pool);
    let view = pool.mount("v", MountOpts::subpath("a/b"));
    // readdir's ".." entry names the root itself, not the directory above it.
    let mut dotdot = None;
    let mut dot = None;
    // SAFETY: opendir/readdir/closedir on a path we own, entries read before closedir.
    unsafe {
        let d = libc::opendir(common::cpath(view.path()).as_ptr());
        assert!(!d.is_null());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes().to_vec();
            if name == b".." {
                dotdot = Some((*e).d_ino);
            } else if name == b"." {
                dot = Some((*e).d_ino);
            }
        }
        libc::closedir(d);
    }
    assert_eq!(dotdot, dot, "'..' of the view root points above it");
    // A path through ".." leaves the mount in the reader's own namespace, as on any mount.
    assert_eq!(fs::canonicalize(view.join("..")).unwrap(), view.path().parent().unwrap());
}

#[test]
fn symlinks_inside_resolve_in_the_readers_namespace() {
    let pool = TestPool::new();
    let _full = volume_with_tree(&pool);
    let view = pool.mount("v", MountOpts::subpath("a/b"));
    symlink("../outside", view.join("up")).unwrap();
    symlink("/etc/hostname", view.join("abs")).unwrap();
    // The target is text; the kernel resolves it relative to the view's mountpoint.
    assert_eq!(fs::read_link(view.join("up")).unwrap(), std::path::Path::new("../outside"));
    assert!(fs::read(view.join("up")).is_err(), "../outside must not reach the volume's a/outside");
    assert_eq!(fs::read(view.join("abs")).unwrap(), fs::read("/etc/hostname").unwrap());
}

#[test]
fn a_symlink_on_the_subpath_is_refused_naming_it() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    symlink("a", full.join("link")).unwrap();
    symlink("/", full.join("a/root")).unwrap();
    for (sub, component) in [("link/b", "link"), ("a/root", "a/root"), ("a/root/etc", "a/root")] {
        let at = pool.fresh_dir();
        let out = pool.run(&["mount", "v", at.to_str().unwrap(), "--subpath", sub]);
        assert!(!out.status.success(), "{sub} mounted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{component:?}")) && err.contains("symbolic link"), "{sub}: {err}");
        assert!(!common::is_mountpoint(&at));
    }
}

#[test]
fn absolute_and_dotdot_subpaths_are_refused() {
    let pool = TestPool::new();
    let _full = volume_with_tree(&pool);
    for (sub, says) in [("/a/b", "must be relative"), ("a/../a/b", "'..'"), ("..", "'..'"), ("a/b/..", "'..'")] {
        let at = pool.fresh_dir();
        let out = pool.run(&["mount", "v", at.to_str().unwrap(), "--subpath", sub]);
        assert!(!out.status.success(), "{sub} mounted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{sub}: {err}");
    }
}

#[test]
fn a_view_of_one_file_goes_on_a_regular_file_and_reads_and_writes_it() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let on_dir = pool.fresh_dir();
    let out = pool.run(&["mount", "v", on_dir.to_str().unwrap(), "--subpath", "a/outside"]);
    assert!(!out.status.success(), "a file view mounted on a directory");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_file = pool.root().join("file-target");
    fs::write(&on_file, b"").unwrap();
    let out = pool.run(&["mount", "v", on_file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"), "a volume root mounted on a file");
    let out = pool.run(&["mount", "v", on_file.to_str().unwrap(), "--subpath", "a/b/../b"]);
    assert!(!out.status.success());
    let view = pool.mount_at("v", &on_file, MountOpts::subpath("a/outside"));
    assert_eq!(fs::read(view.path()).unwrap(), b"out");
    fs::write(view.path(), b"changed through the view").unwrap();
    assert_eq!(fs::read(full.join("a/outside")).unwrap(), b"changed through the view");
    assert!(fs::metadata(view.path()).unwrap().is_file());
    let out = pool.run(&["mount", "v", pool.fresh_dir().to_str().unwrap(), "--subpath", "a/outside/deeper"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
}

#[test]
fn a_missing_subpath_is_refused_unless_created() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let at = pool.fresh_dir();
    let out = pool.run(&["mount", "v", at.to_str().unwrap(), "--subpath", "new/deep"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"new\" does not exist"));
    assert!(fs::metadata(full.join("new")).is_err(), "a failed mount created something");
}

#[test]
fn create_makes_missing_directories_with_the_root_mode() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    fs::set_permissions(full.path(), std::os::unix::fs::PermissionsExt::from_mode(0o2775)).unwrap();
    let root_mode = fs::metadata(full.path()).unwrap().mode() & 0o7777;
    assert_eq!(root_mode, 0o2775);
    let view = pool.mount("v", MountOpts { create: true, ..MountOpts::subpath("new/deep") });
    for dir in ["new", "new/deep"] {
        let m = fs::metadata(full.join(dir)).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, root_mode, "{dir}");
    }
    fs::write(view.join("f"), b"x").unwrap();
    assert_eq!(fs::read(full.join("new/deep/f")).unwrap(), b"x");
}

#[test]
fn the_view_follows_its_directory_through_renames() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let view = pool.mount("v", MountOpts::subpath("a/b"));
    fs::rename(full.join("a/b"), full.join("moved")).unwrap();
    fs::rename(full.join("a"), full.join("gone")).unwrap();
    assert_eq!(names(view.path()), ["inside"]);
    fs::write(view.join("new"), b"n").unwrap();
    assert_eq!(fs::read(full.join("moved/new")).unwrap(), b"n");
}

#[test]
fn views_and_the_full_mount_see_each_others_changes_at_once() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let v1 = pool.mount("v", MountOpts::subpath("a/b"));
    let v2 = pool.mount("v", MountOpts::subpath("a/b"));
    fs::write(v1.join("x"), b"one").unwrap();
    assert_eq!(fs::read(v2.join("x")).unwrap(), b"one");
    assert_eq!(fs::read(full.join("a/b/x")).unwrap(), b"one");
    fs::write(full.join("a/b/x"), b"two!").unwrap();
    assert_eq!(fs::read(v1.join("x")).unwrap(), b"two!");
    assert_eq!(fs::metadata(v2.join("x")).unwrap().len(), 4);
    fs::rename(v2.join("x"), v2.join("y")).unwrap();
    assert_eq!(names(v1.path()), ["inside", "y"]);
    fs::remove_file(full.join("a/b/y")).unwrap();
    assert_eq!(names(v1.path()), ["inside"]);
    assert_eq!(names(v2.path()), ["inside"]);
}

#[test]
fn links_and_renames_cannot_cross_the_view_boundary() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let view = pool.mount("v", MountOpts::subpath("a/b"));
    // The only way to name something outside the view is through another mount, and the
    // kernel keeps links and renames inside one mount.
    let exdev = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(exdev(fs::hard_link(full.join("top"), view.join("top"))), Some(libc::EXDEV));
    assert_eq!(exdev(fs::rename(view.join("inside"), full.join("stolen"))), Some(libc::EXDEV));
    assert_eq!(exdev(fs::rename(full.join("top"), view.join("top"))), Some(libc::EXDEV));
    assert_eq!(names(view.path()), ["inside"]);
}

/// The race behind CVE-2021-25741: while views of `a/b` are mounted again and again, other
/// threads keep swapping `a`, `a/b` and the parents for symlinks to `/`, to `/etc` and to a
/// mount of another volume. Every view that mounts must show `a/b` and nothing else.
#[test]
fn symlink_swaps_during_mounts_never_expose_anything_outside() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    pool.create_volume("other", None);
    let other = pool.mount("other", MountOpts::default());
    fs::write(other.join("secret"), b"other volume").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let root = full.path().to_path_buf();
    let targets = [std::path::PathBuf::from("/"), "/etc".into(), other.path().to_path_buf()];
    // One thread swaps, so the tree is always whole again between two swaps; `a` is only
    // touched below through the full mount while it is the real directory.
    let swapper = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let name = if n.is_multiple_of(2) { "a" } else { "a/b" };
                let aside = format!("{name}.real");
                fs::rename(root.join(name), root.join(&aside)).unwrap();
                symlink(&targets[n % targets.len()], root.join(name)).unwrap();
                std::thread::yield_now();
                fs::remove_file(root.join(name)).unwrap();
                fs::rename(root.join(&aside), root.join(name)).unwrap();
                // Leave the real tree in place now and then, so that some mounts succeed.
                std::thread::sleep(Duration::from_micros(300));
                n += 1;
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    let (mut mounted, mut refused) = (0, 0);
    while Instant::now() < deadline {
        let at = pool.fresh_dir();
        let out = pool.run(&["mount", "v", at.to_str().unwrap(), "--subpath", "a/b"]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("symbolic link") || err.contains("does not exist"), "{err}");
            refused += 1;
            continue;
        }
        mounted += 1;
        let seen = names(&at);
        let ok = pool.run(&["umount", at.to_str().unwrap()]);
        assert!(ok.status.success());
        assert_eq!(seen, ["inside"], "a view of a/b showed something else");
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "only {swaps} swaps ran");
    assert!(mounted > 0 && refused > 0, "{mounted} views mounted, {refused} refused: no race happened");
    // The tree is whole again and the pool is consistent.
    assert_eq!(names(&root.join("a/b")), ["inside"]);
    drop(other);
    drop(full);
    let fsck = pool.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}

/// Requests the daemon served on volume `v`, by operation.
fn requests(pool: &TestPool, op: &str) -> u64 {
    let stats = pool.json(&["stats"]);
    let v = stats["volumes"].as_array().unwrap().iter().find(|v| v["volume"] == "v" && v["snapshot"].is_null());
    let found = v.and_then(|v| v["requests"].as_array().unwrap().iter().find(|r| r["op"] == op).cloned());
    found.map_or(0, |r| r["latency"]["buckets"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum())
}

#[test]
fn listings_are_kept_between_opens_and_follow_every_change_from_anywhere() {
    let pool = TestPool::new();
    let full = volume_with_tree(&pool);
    let other = pool.mount("v", MountOpts::default());
    let view = pool.mount("v", MountOpts::subpath("a"));
    let reads = || requests(&pool, "readdir") + requests(&pool, "readdirplus");
    assert_eq!(names(&full.join("a")), ["b", "outside"]);
    let (read, opened) = (reads(), requests(&pool, "opendir"));
    assert_eq!(names(&full.join("a")), ["b", "outside"]);
    assert_eq!(names(view.path()), ["b", "outside"]);
    let again = reads();
    assert_eq!(names(&full.join("a")), ["b", "outside"]);
    assert_eq!(reads(), again, "an unchanged listing comes from the kernel's cache");
    assert!(again - read <= 2, "{} directory reads for a listing of another mount", again - read);
    assert!(requests(&pool, "opendir") - opened <= 1, "directories are opened without the daemon");
    assert_eq!(requests(&pool, "releasedir"), 0);

    // Changes through another mount, through a subPath mount, and made by the daemon itself.
    fs::write(other.join("a/new"), b"n").unwrap();
    fs::remove_file(other.join("a/outside")).unwrap();
    fs::create_dir(view.join("sub")).unwrap();
    assert_eq!(names(&full.join("a")), ["b", "new", "sub"]);
    fs::rename(full.join("a/new"), full.join("a/b/renamed")).unwrap();
    assert_eq!(names(&other.join("a")), ["b", "sub"]);
    assert_eq!(names(&other.join("a/b")), ["inside", "renamed"]);
    assert_eq!(names(view.path()), ["b", "sub"]);
    let made = pool.mount("v", MountOpts { create: true, ..MountOpts::subpath("a/made/deeper") });
    assert_eq!(names(&full.join("a")), ["b", "made", "sub"]);
    assert_eq!(names(view.path()), ["b", "made", "sub"]);
    assert_eq!(names(&other.join("a/made")), ["deeper"]);
    drop(made);
}
