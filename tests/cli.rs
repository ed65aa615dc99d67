//! The `volfs` command line: bad input fails with a non-zero exit, one line on stderr naming
//! what is wrong, and no change; the happy paths print what they did, as tables or JSON.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_fails_naming, is_mountpoint, run_bounded, wait_child, wait_pid_exit, MountOpts, TestPool, VOLFS};
use serde_json::{json, Value};

/// What the pool holds: its volumes as `volume list --json` shows them.
/// The volume list without the figures that follow the pool's free space.
fn volumes(pool: &TestPool) -> Value {
    let mut list = pool.json(&["volume", "list"]);
    for v in list.as_array_mut().into_iter().flatten() {
        let v = v.as_object_mut().expect("a volume is an object");
        v.remove("available_bytes");
        v.remove("inodes_free");
    }
    list
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------------------------
// Bad input.

#[test]
fn mount_of_unknown_volume_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let before = volumes(&pool);
    let at = pool.fresh_dir();
    let out = pool.run(&["mount", "nope", path_str(&at)]);
    assert_fails_naming(&out, "mount nope", &["nope"]);
    assert!(!is_mountpoint(&at));
    assert_eq!(volumes(&pool), before);
    if pool.daemon_pid().is_some() {
        assert_eq!(pool.json(&["mounts"]), json!([]));
    }
}

#[test]
fn inspect_of_unknown_volume_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let before = volumes(&pool);
    assert_fails_naming(&pool.run(&["volume", "inspect", "nope"]), "inspect nope", &["nope"]);
    assert_fails_naming(&pool.run(&["volume", "inspect", "nope", "--json"]), "inspect nope --json", &["nope"]);
    assert_eq!(volumes(&pool), before);
}

#[test]
fn delete_of_unknown_volume_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let before = volumes(&pool);
    assert_fails_naming(&pool.run(&["volume", "delete", "nope"]), "delete nope", &["nope"]);
    assert_eq!(volumes(&pool), before);
}

#[test]
fn failed_mount_leaves_no_daemon_running() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let at = pool.fresh_dir();
    assert_fails_naming(&pool.run(&["mount", "nope", path_str(&at)]), "mount nope", &["nope"]);
    assert_eq!(pool.daemon_pid(), None, "a mount of an unknown volume left a daemon running");
    let missing = pool.root().join("missing");
    assert_fails_naming(&pool.run(&["mount", "a", path_str(&missing)]), "mount on a missing dir", &["missing"]);
    assert_eq!(pool.daemon_pid(), None, "a mount on a missing mountpoint left a daemon running");
}

#[test]
fn bad_capacity_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let before = volumes(&pool);
    for bad in ["10Gb", "0", "ten", "1.2.3"] {
        let out = pool.run(&["volume", "create", "b", "--capacity", bad]);
        assert_fails_naming(&out, &format!("--capacity {bad}"), &[&format!("\"{bad}\""), "capacity"]);
    }
    assert_eq!(volumes(&pool), before);
}

#[test]
fn invalid_volume_name_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let before = volumes(&pool);
    for bad in ["Bad_Name", "-a", "a-", "a/b"] {
        let out = pool.run(&["volume", "create", "--", bad]);
        assert_fails_naming(&out, &format!("create {bad}"), &[bad]);
    }
    let long = "a".repeat(254);
    assert_fails_naming(&pool.run(&["volume", "create", &long]), "254-character name", &["254"]);
    assert_eq!(volumes(&pool), before);
}

#[test]
fn invalid_volume_name_creates_no_pool() {
    let pool = TestPool::new();
    assert_fails_naming(&pool.run(&["volume", "create", "Bad_Name"]), "create Bad_Name", &["Bad_Name"]);
    assert!(!pool.path().exists(), "a rejected create made the pool directory {}", pool.path().display());
}

#[test]
fn existing_volume_name_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let before = volumes(&pool);
    let out = pool.run(&["volume", "create", "a", "--capacity", "2Gi"]);
    let line = assert_fails_naming(&out, "create a twice", &["a"]);
    assert!(line.contains("exists"), "{line}");
    assert_eq!(volumes(&pool), before);
    assert_eq!(pool.json(&["volume", "inspect", "a"])["capacity"], json!(1u64 << 30));
}

#[test]
fn missing_mountpoint_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let missing = pool.root().join("nowhere");
    let out = pool.run(&["mount", "a", path_str(&missing)]);
    assert_fails_naming(&out, "mount on a missing dir", &[path_str(&missing)]);
    assert!(!missing.exists(), "the mountpoint was created");
    if pool.daemon_pid().is_some() {
        assert_eq!(pool.json(&["mounts"]), json!([]));
    }
}

#[test]
fn mountpoint_that_is_a_file_fails_naming_it() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let file = pool.root().join("file");
    fs::write(&file, b"x").unwrap();
    let out = pool.run(&["mount", "a", path_str(&file)]);
    assert_fails_naming(&out, "mount on a file", &[path_str(&file)]);
    assert!(!is_mountpoint(&file));
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

#[test]
fn busy_mountpoint_fails_naming_it() {
    let pool = TestPool::new();
    let m = pool.mount("a", MountOpts::default());
    pool.create_volume("b", None);
    fs::write(m.join("f"), b"first").unwrap();
    // Another volume, or the same one read-only; the same mount asked again is answered.
    for args in [&["b"][..], &["a", "--read-only"]] {
        let mut cmd = vec!["mount", args[0], path_str(m.path())];
        cmd.extend(&args[1..]);
        let line = assert_fails_naming(&pool.run(&cmd), &format!("{cmd:?} on a busy dir"), &[path_str(m.path())]);
        assert!(line.contains("busy"), "{line}");
    }
    assert_eq!(fs::read(m.join("f")).unwrap(), b"first", "the first mount still serves");
    let mounts = pool.json(&["mounts"]);
    assert_eq!(mounts.as_array().map(Vec::len), Some(1), "{mounts}");
    assert_eq!(mounts[0]["volume"], json!("a"));
    // Something else mounted there (another pool's volume) makes it busy too.
    let other = TestPool::new();
    let foreign = other.mount("x", MountOpts::default());
    let out = pool.run(&["mount", "b", path_str(foreign.path())]);
    let line = assert_fails_naming(&out, "mount on a foreign mount", &[path_str(foreign.path())]);
    assert!(line.contains("busy"), "{line}");
    assert_eq!(pool.json(&["mounts"]).as_array().map(Vec::len), Some(1));
}

#[test]
fn missing_pool_fails_naming_it() {
    let pool = TestPool::new();
    let dir = pool.path();
    for args in [&["volume", "list"][..], &["volume", "inspect", "a"], &["volume", "delete", "a"], &["fsck"]] {
        assert_fails_naming(&pool.run(args), &format!("{args:?} without a pool"), &[path_str(dir)]);
        assert!(!dir.exists(), "{args:?} created the pool directory");
    }
}

#[test]
fn no_pool_given_fails_naming_the_option() {
    let mut cmd = Command::new(VOLFS);
    cmd.args(["volume", "list"]).env_remove("VOLFS_POOL").env_remove("VOLFS_SOCKET").stdin(Stdio::null());
    assert_fails_naming(&run_bounded(cmd), "volume list without --pool", &["--pool", "VOLFS_POOL"]);
}

#[test]
fn second_daemon_on_a_pool_fails_naming_the_pool_and_the_holder() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let mut first = pool.command(&["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let log = stderr_lines(&mut first);
    assert!(wait_for_line(&log, "serving", Duration::from_secs(30)), "the first daemon starts serving");
    let pid = first.id().to_string();

    let mut second = pool.command(&["serve"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_child(&mut second, Duration::from_secs(30)).expect("the second daemon exits by itself");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    let out = Output { status, stdout: Vec::new(), stderr: err.into_bytes() };
    assert_fails_naming(&out, "a second serve", &[path_str(pool.path()), &pid]);

    // The first daemon still serves.
    assert_eq!(pool.json(&["mounts"]), json!([]));
    assert_eq!(pool.daemon_pid(), Some(first.id() as i32));
    pool.ok(&["shutdown"]);
    let stopped = wait_child(&mut first, Duration::from_secs(30)).expect("the daemon stops on shutdown");
    assert!(stopped.success(), "serve exited with {stopped}");
}

#[test]
fn umount_shutdown_and_mounts_without_a_daemon_fail_naming_the_pool() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let at = pool.fresh_dir();
    for args in [&["umount", path_str(&at)][..], &["shutdown"], &["mounts"]] {
        assert_fails_naming(&pool.run(args), &format!("{args:?} without a daemon"), &[path_str(pool.path())]);
    }
    assert_eq!(pool.daemon_pid(), None);
}

#[test]
fn umount_of_a_path_not_mounted_fails_naming_it() {
    let pool = TestPool::new();
    let m = pool.mount("a", MountOpts::default());
    let other = pool.fresh_dir();
    assert_fails_naming(&pool.run(&["umount", path_str(&other)]), "umount a plain dir", &[path_str(&other)]);
    assert!(is_mountpoint(m.path()));
}

#[test]
fn delete_of_mounted_volume_fails_naming_the_mountpoint() {
    let pool = TestPool::new();
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), b"kept").unwrap();
    let out = pool.run(&["volume", "delete", "a"]);
    assert_fails_naming(&out, "delete a mounted volume", &["a", path_str(m.path())]);
    assert_eq!(fs::read(m.join("f")).unwrap(), b"kept");
    assert_eq!(pool.volume_names(), ["a"]);
}

// ---------------------------------------------------------------------------------------------
// Happy paths.

#[test]
fn volume_create_list_inspect_delete_print_tables() {
    let pool = TestPool::new();
    let out = pool.ok(&["volume", "create", "data-1", "--capacity", "1Gi"]);
    assert_eq!(out, "created volume data-1 (capacity 1.0 GiB)\n");
    assert_eq!(pool.ok(&["volume", "create", "scratch"]), "created volume scratch (capacity unlimited)\n");
    let list = pool.ok(&["volume", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(
        lines[3].starts_with("provisioned 1.0 GiB of the pool's") && lines[3].contains("1 volumes without"),
        "{list}"
    );
    assert!(lines[0].starts_with("NAME") && lines[0].contains("CAPACITY"), "{list}");
    let row = lines.iter().find(|l| l.starts_with("data-1 ")).expect("a row for data-1");
    assert!(row.contains("1.0 GiB"), "{row}");
    assert!(lines.iter().any(|l| l.starts_with("scratch ") && l.contains("unlimited")), "{list}");
    let inspect = pool.ok(&["volume", "inspect", "data-1"]);
    assert!(inspect.lines().any(|l| l.starts_with("name:") && l.ends_with("data-1")), "{inspect}");
    assert!(inspect.lines().any(|l| l.starts_with("capacity:") && l.ends_with("1.0 GiB")), "{inspect}");
    assert!(inspect.lines().any(|l| l.starts_with("mounts:") && l.ends_with("none")), "{inspect}");
    assert_eq!(pool.ok(&["volume", "delete", "data-1"]), "deleted volume data-1\n");
    let list = pool.ok(&["volume", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains("data-1"), "{list}");
}

#[test]
fn volume_create_list_inspect_delete_print_json() {
    let pool = TestPool::new();
    let created = pool.json(&["volume", "create", "a", "--capacity", "500Mi"]);
    assert_eq!(created["name"], json!("a"));
    assert_eq!(created["capacity"], json!(500u64 << 20));
    assert_eq!(created["inodes"], json!(1));
    let list = pool.json(&["volume", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], json!("a"));
    assert_eq!(list[0]["id"], created["id"]);
    let inspect = pool.json(&["volume", "inspect", "a"]);
    assert_eq!(inspect["capacity"], json!(500u64 << 20));
    assert_eq!(inspect["mounts"], json!([]));
    assert_eq!(pool.json(&["volume", "delete", "a"]), json!({ "deleted": "a" }));
    assert_eq!(pool.json(&["volume", "list"]), json!([]));
}

#[test]
fn volfs_pool_env_names_the_pool() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let mut cmd = Command::new(VOLFS);
    cmd.args(["volume", "list", "--json"]).env("VOLFS_POOL", pool.path()).env_remove("VOLFS_SOCKET");
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], json!("a"));
}

#[test]
fn mount_autostarts_a_daemon_that_outlives_the_cli() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    assert_eq!(pool.daemon_pid(), None);
    let at = pool.fresh_dir();
    let out = pool.ok(&["mount", "a", path_str(&at)]);
    assert_eq!(out, format!("mounted a at {}\n", at.display()));
    // The CLI has exited; the daemon it started serves on, in a session of its own.
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon runs");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat format").1.split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "the daemon leads its own session");
    assert!(is_mountpoint(&at));
    fs::write(at.join("f"), b"served").unwrap();
    assert_eq!(fs::read(at.join("f")).unwrap(), b"served");
    let mounts = pool.json(&["mounts"]);
    let expected =
        json!([{ "volume": "a", "projected": false, "subpath": "", "mountpoint": path_str(&at), "read_only": false }]);
    assert_eq!(mounts, expected);
    let inspect = pool.json(&["volume", "inspect", "a"]);
    assert_eq!(inspect["mounts"], mounts);
    let table = pool.ok(&["mounts"]);
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains(path_str(&at)) && l.ends_with("rw")), "{table}");

    let ro = pool.fresh_dir();
    let out = pool.ok(&["mount", "a", path_str(&ro), "--read-only"]);
    assert_eq!(out, format!("mounted a at {} (read-only)\n", ro.display()));
    assert_eq!(pool.daemon_pid(), Some(pid), "the second mount uses the running daemon");
    assert_eq!(fs::read(ro.join("f")).unwrap(), b"served");

    assert_eq!(pool.ok(&["umount", path_str(&ro)]), format!("unmounted {}\n", ro.display()));
    assert_eq!(pool.json(&["umount", path_str(&at)]), json!({ "unmounted": path_str(&at) }));
    assert!(!is_mountpoint(&at) && !is_mountpoint(&ro));
    assert_eq!(pool.json(&["mounts"]), json!([]));
    assert_eq!(pool.daemon_pid(), Some(pid), "the daemon serves on with nothing mounted");
    assert_eq!(pool.ok(&["shutdown"]), format!("daemon for {} stopped\n", pool.path().display()));
    assert!(wait_pid_exit(pid, Duration::from_secs(30)), "the daemon exits after shutdown");
}

#[test]
fn shutdown_unmounts_everything() {
    let pool = TestPool::new();
    let a = pool.mount("a", MountOpts::default());
    let b = pool.mount("b", MountOpts::read_only());
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    pool.ok(&["shutdown"]);
    assert!(wait_pid_exit(pid, Duration::from_secs(30)), "the daemon exits after shutdown");
    assert!(!is_mountpoint(a.path()) && !is_mountpoint(b.path()));
    // Without a daemon the CLI opens the pool itself.
    assert_eq!(pool.volume_names(), ["a", "b"]);
}

#[test]
fn fsck_on_a_fresh_pool_exits_0() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    pool.create_volume("b", Some("1Gi"));
    let out = pool.ok(&["fsck"]);
    assert!(out.lines().last() == Some("pool is consistent"), "{out}");
    let report = pool.json(&["fsck"]);
    assert_eq!(report["problems"], json!([]));
    assert_eq!(report["volumes"], json!(2));
    // Online, through a running daemon, too.
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), b"x").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    let report = pool.json(&["fsck"]);
    assert_eq!(report["problems"], json!([]), "{report}");
    assert!(pool.ok(&["fsck", "--repair"]).lines().last() == Some("pool is consistent"));
}

#[test]
fn umount_of_a_busy_mount_fails_and_keeps_it_served() {
    let pool = TestPool::new();
    pool.create_volume("a", None);
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), b"kept").unwrap();
    let open = fs::File::open(m.join("f")).unwrap();
    let at = path_str(m.path()).to_string();
    let out = pool.run(&["umount", &at]);
    let err = assert_fails_naming(&out, "busy umount", &[&at, "busy"]);
    assert!(is_mountpoint(m.path()), "{err}");
    assert_eq!(pool.json(&["mounts"])[0]["mountpoint"], at.as_str());
    assert_eq!(fs::read(m.join("f")).unwrap(), b"kept");
    drop(open);
    pool.ok(&["umount", &at]);
    assert!(!is_mountpoint(m.path()));
    assert_eq!(pool.json(&["mounts"]), json!([]));
}

/// The size statfs reports for a mount, in bytes.
fn statfs_size(path: &Path) -> u64 {
    let c = common::cpath(path);
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_blocks * st.f_frsize
}

#[test]
fn resize_while_mounted_shows_in_statfs_at_once() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    assert_eq!(statfs_size(m.path()), 1 << 30);
    let v = pool.json(&["volume", "resize", "a", "--capacity", "3Gi"]);
    assert_eq!(v["capacity"], 3u64 << 30);
    assert_eq!(statfs_size(m.path()), 3 << 30, "df did not show the new size without a remount");
    pool.ok(&["volume", "resize", "a", "--capacity", "512Mi"]);
    assert_eq!(statfs_size(m.path()), 512 << 20);
}

#[test]
fn resize_below_what_is_used_or_to_a_bad_size_fails_and_changes_nothing() {
    let pool = TestPool::new();
    pool.create_volume("a", Some("1Gi"));
    let m = pool.mount("a", MountOpts::default());
    fs::write(m.join("f"), vec![7u8; 3 << 20]).unwrap();
    let out = pool.run(&["volume", "resize", "a", "--capacity", "1Mi"]);
    assert_fails_naming(&out, "shrink below used", &["volume a", "holds"]);
    for bad in ["0", "10Gb", "1.2.3"] {
        let out = pool.run(&["volume", "resize", "a", "--capacity", bad]);
        assert_fails_naming(&out, bad, &["--capacity", bad]);
    }
    let out = pool.run(&["volume", "resize", "nope", "--capacity", "1Gi"]);
    assert_fails_naming(&out, "unknown volume", &["nope"]);
    assert_eq!(pool.json(&["volume", "inspect", "a"])["capacity"], 1u64 << 30);
    assert_eq!(statfs_size(m.path()), 1 << 30);
}

#[test]
fn asking_again_for_what_exists_answers_it() {
    let pool = TestPool::new();
    let first = pool.json(&["volume", "create", "a", "--capacity", "1Gi"]);
    assert_eq!(pool.json(&["volume", "create", "a", "--capacity", "1Gi"])["id"], first["id"]);
    let cut = pool.json(&["snapshot", "create", "a", "s"]);
    let again = pool.json(&["snapshot", "create", "a", "s"]);
    assert_eq!((&again["name"], &again["created_unix"]), (&cut["name"], &cut["created_unix"]));
    let m = pool.mount("a", MountOpts::default());
    let at = m.path().to_str().unwrap();
    let mounted = pool.json(&["mount", "a", at]);
    assert_eq!(mounted["mountpoint"], json!(at));
    let mounts = pool.json(&["mounts"]);
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    // The same mountpoint with other options is refused, naming what is there.
    let out = pool.run(&["mount", "a", at, "--read-only"]);
    assert_fails_naming(&out, "a read-only mount over a read-write one", &["busy", "volume a"]);
}

#[test]
fn only_root_can_enter_the_pool_whatever_the_umask() {
    let pool = TestPool::new();
    let mut create = pool.command(&["volume", "create", "secretive"]);
    // SAFETY: sets the umask of the child alone, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut create, || {
            libc::umask(0);
            Ok(())
        })
    };
    assert!(run_bounded(create).status.success());
    let m = pool.mount("secretive", MountOpts::default());
    fs::write(m.join("name-of-a-secret-file"), b"x").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(pool.path()), 0o700);
    let journal = fs::read_dir(pool.path().join("meta")).unwrap().next().unwrap().unwrap().path();
    for (what, path) in [("the pool", pool.path().to_path_buf()), ("the metadata", journal)] {
        let denied =
            common::as_user(65534, 65534, || fs::read_dir(&path).map(drop).or_else(|_| fs::read(&path).map(drop)));
        assert_eq!(denied.unwrap_err().raw_os_error(), Some(libc::EACCES), "nobody reached {what}");
    }
    drop(m);
    assert!(pool.shutdown());
    // A pool opened to others is closed again when it is next opened, with a warning.
    fs::set_permissions(pool.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = pool.run(&["volume", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("open to other users"), "{out:?}");
    assert_eq!(mode(pool.path()), 0o700);
}

#[test]
fn sigterm_stops_the_daemon_even_when_its_socket_file_is_gone() {
    let pool = TestPool::new();
    let m = pool.mount("a", MountOpts::default());
    let at = m.path().to_path_buf();
    let pid = pool.daemon_pid().expect("a daemon serves the pool");
    fs::remove_file(pool.path().join("volfs.sock")).unwrap();
    // SAFETY: signals the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_pid_exit(pid, Duration::from_secs(15)), "the daemon ignored SIGTERM");
    assert!(!is_mountpoint(&at), "the stopped daemon unmounted its volume");
    drop(m);
}

#[test]
fn sigterm_stops_the_daemon_within_its_limit_even_when_its_pools_disk_hangs() {
    // The pool lives on a volume of another daemon: stopping that one (SIGSTOP) makes every I/O
    // on the pool wait, as on a disk that stopped answering.
    let outer = TestPool::new();
    let disk = outer.mount("disk", MountOpts::default());
    let mut daemon = Command::new(VOLFS)
        .arg("--pool")
        .arg(disk.join("pool"))
        .args(["serve", "--stop-limit", "2"])
        .env_remove("VOLFS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut daemon);
    assert!(wait_for_line(&rx, "serving", Duration::from_secs(30)), "the daemon starts serving");
    let disk_daemon = outer.daemon_pid().expect("a daemon serves the disk");

    // SAFETY: signals the daemons this test started; the disk's daemon is continued below.
    unsafe { libc::kill(disk_daemon, libc::SIGSTOP) };
    // Only once every thread of the disk's daemon has stopped: a request one of them read and
    // left unanswered would make its caller unkillable, a request still queued does not.
    wait_all_threads_stopped(disk_daemon);
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut daemon, Duration::from_secs(30));
    unsafe { libc::kill(disk_daemon, libc::SIGCONT) };

    let status = status.expect("the daemon exits once its stop limit has passed");
    assert!(!status.success(), "a stop cut short is not a clean exit: {status}");
    let log: Vec<String> = rx.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("longer than the limit")), "the daemon says why it exits: {log:#?}");
    drop(disk);
}

/// Every line `child` writes to its (piped) stderr, as it comes.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Whether a line containing `text` comes within `limit`.
fn wait_for_line(lines: &mpsc::Receiver<String>, text: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Waits until every thread of `pid` is stopped (state T in /proc/PID/task/*/stat).
fn wait_all_threads_stopped(pid: i32) {
    let stopped = || {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().all(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    };
    let start = std::time::Instant::now();
    while !stopped() {
        assert!(start.elapsed() < Duration::from_secs(30), "daemon {pid} did not stop on SIGSTOP");
        std::thread::sleep(Duration::from_millis(5));
    }
}
