//! `volfs project mount` and `volfs project update` through the CLI and the daemon.

mod common;

use std::fs;
use std::path::Path;

use common::TestPool;

const SPEC: &str = include_str!("fixtures/projected.yaml");

fn write_spec(pool: &TestPool, name: &str, text: &str) -> String {
    let path = pool.root().join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn data_target(mnt: &Path) -> String {
    fs::read_link(mnt.join("..data")).unwrap().to_str().unwrap().to_string()
}

#[test]
fn project_mount_serves_the_kubelet_layout_and_update_swaps_generations() {
    let pool = TestPool::new();
    let spec = write_spec(&pool, "spec.yaml", SPEC);
    let mnt = pool.fresh_dir();
    let mnt_str = mnt.to_str().unwrap();
    pool.ok(&["project", "mount", &spec, mnt_str]);
    let first = data_target(&mnt);
    assert!(first.starts_with("..") && mnt.join(&first).is_dir(), "{first}");
    assert_eq!(fs::read_link(mnt.join("config")).unwrap(), Path::new("..data/config"));
    assert_eq!(fs::read_to_string(mnt.join("config/app.yaml")).unwrap(), "listen: :8080\nlog: info\n");
    assert_eq!(fs::read(mnt.join("password")).unwrap(), b"hunter2");
    let err = fs::write(mnt.join("password"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    let listed = pool.json(&["mounts"]);
    assert_eq!(listed[0]["projected"], true, "{listed}");
    assert_eq!(listed[0]["read_only"], true, "{listed}");

    let edited = write_spec(&pool, "edited.yaml", &SPEC.replace("log: info", "log: debug"));
    let out = pool.json(&["project", "update", mnt_str, &edited]);
    assert_eq!(out["changed"], true, "{out}");
    let second = data_target(&mnt);
    assert_ne!(first, second);
    assert_eq!(out["generation"], second.as_str());
    assert_eq!(fs::read_to_string(mnt.join("config/app.yaml")).unwrap(), "listen: :8080\nlog: debug\n");

    // The same content again keeps the generation, as the kubelet does.
    let out = pool.json(&["project", "update", mnt_str, &edited]);
    assert_eq!(out["changed"], false, "{out}");
    assert_eq!(data_target(&mnt), second);
    pool.ok(&["umount", mnt_str]);
    assert!(!common::is_mountpoint(&mnt));
}

#[test]
fn a_bad_update_names_the_document_and_field_and_changes_nothing() {
    let pool = TestPool::new();
    let spec = write_spec(&pool, "spec.yaml", SPEC);
    let mnt = pool.fresh_dir();
    let mnt_str = mnt.to_str().unwrap();
    pool.ok(&["project", "mount", &spec, mnt_str]);
    let before = data_target(&mnt);
    for (bad, says) in [
        (SPEC.replace("path: config/app.yaml", "path: ../etc/x"), "sources[0].configMap.items[0].path"),
        (SPEC.replace("mode: 0755", "mode: 01000"), "mode"),
        (SPEC.replacen("name: db-credentials\n", "name: missing\n", 1), "missing"),
        ("sources: [\n".to_string(), "document 1"),
    ] {
        let path = write_spec(&pool, "bad.yaml", &bad);
        let out = pool.run(&["project", "update", mnt_str, &path]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "expected {says:?} in {err}");
        assert_eq!(data_target(&mnt), before, "a failed update changed the tree");
        assert_eq!(fs::read(mnt.join("password")).unwrap(), b"hunter2");
    }
    let out = pool.run(&["project", "update", pool.fresh_dir().to_str().unwrap(), &spec]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no projected tree is mounted"));
    pool.ok(&["umount", mnt_str]);
}

#[test]
fn secret_bytes_reach_neither_the_pool_nor_its_logs() {
    let pool = TestPool::new();
    let marker = format!("volfs-secret-{}-{}", std::process::id(), pool.root().display().to_string().len());
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, marker.as_bytes());
    let spec = write_spec(&pool, "spec.yaml", &SPEC.replace("aHVudGVyMg==", &encoded));
    let mnt = pool.fresh_dir();
    // The daemon this starts logs everything it may log.
    let out = pool.command(&["project", "mount", &spec, mnt.to_str().unwrap()]).env("VOLFS_LOG", "trace").output();
    assert!(out.unwrap().status.success());
    assert_eq!(fs::read_to_string(mnt.join("password")).unwrap(), marker);
    pool.ok(&["project", "update", mnt.to_str().unwrap(), &spec]);
    pool.ok(&["umount", mnt.to_str().unwrap()]);
    let mut stack = vec![pool.path().to_path_buf()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let bytes = fs::read(entry.path()).unwrap();
                scanned += 1;
                assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{}", entry.path().display());
                assert!(!bytes.windows(encoded.len()).any(|w| w == encoded.as_bytes()), "{}", entry.path().display());
            }
        }
    }
    assert!(scanned > 3, "nothing scanned in the pool");
    assert!(pool.daemon_log().contains("projected tree mounted"), "the daemon logged nothing");
}
