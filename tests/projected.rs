//! Projected trees mounted through the kernel (as root) and read with ordinary syscalls: the
//! kubelet's visible layout, modes and owners, EROFS, updates that readers see whole, open
//! files that keep their bytes, subPath mounts that follow updates, and secrets that never
//! reach the disk or a log.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use volfs::fuse::projected::{ProjectedFs, ProjectedUpdater};
use volfs::fuse::session::{Connection, Sessions};
use volfs::projected::Projection;

const FS_GROUP: u32 = 2000;

/// Content of the files `a` and `b`: the generation's marker, many times, so a read that
/// mixed two generations would show.
fn marked(generation: u32) -> String {
    format!("gen-{generation:06}\n").repeat(4096)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A SPEC using every source type, its objects carrying `generation`.
fn spec(generation: u32, password: &str) -> String {
    let ab = b64(marked(generation).as_bytes());
    format!(
        "sources:
- configMap:
    name: app
- configMap:
    name: app
    items:
    - {{key: app.yaml, path: conf/app.yaml, mode: 0640}}
- secret:
    name: db
    items:
    - {{key: password, path: secret/password, mode: 0400}}
- downwardAPI:
    items:
    - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
- serviceAccountToken:
    path: token
defaultMode: 0644
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: app}}
data:
  app.yaml: 'port: {generation}'
binaryData:
  a: {ab}
  b: {ab}
---
apiVersion: v1
kind: Secret
metadata: {{name: db}}
data:
  password: {}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  securityContext: {{fsGroup: {FS_GROUP}}}
  containers:
  - name: app
---
kind: ServiceAccountToken
token: token-{generation}
",
        b64(password.as_bytes())
    )
}

fn projection(text: &str) -> Projection {
    Projection::from_yaml(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The workers serving every mount of these tests.
fn sessions() -> &'static Sessions {
    static SESSIONS: std::sync::OnceLock<Arc<Sessions>> = std::sync::OnceLock::new();
    SESSIONS.get_or_init(|| Sessions::start(4, 16, 3, (1 << 20) + 4096).expect("starting the FUSE workers"))
}

/// A mount in a temporary directory, unmounted on drop (lazily if something still uses it).
struct Mounted {
    session: Option<Arc<Connection>>,
    at: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn new(fs: ProjectedFs, subpath: Option<&str>, file: bool) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("mnt");
        if file {
            File::create(&at).unwrap();
        } else {
            fs::create_dir(&at).unwrap();
        }
        let session = fs.mount(sessions(), &at, subpath).unwrap_or_else(|e| panic!("mount {}: {e}", at.display()));
        wait_for_mount(&at);
        Mounted { session: Some(session), at, _dir: dir }
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.at.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mountpoint(&self.at) {
            let c = std::ffi::CString::new(self.at.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        drop(self.session.take());
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

fn wait_for_mount(path: &Path) {
    let start = Instant::now();
    while !is_mountpoint(path) {
        assert!(start.elapsed() < Duration::from_secs(10), "{} never mounted", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mount(generation: u32) -> (Mounted, ProjectedUpdater) {
    let (fs, updater) = ProjectedFs::new(projection(&spec(generation, "pw")));
    (Mounted::new(fs, None, false), updater)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn errno(r: io::Result<impl std::fmt::Debug>) -> i32 {
    match r {
        Ok(v) => panic!("succeeded: {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display())).mode()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_visible_layout_is_the_kubelets() {
    let (m, updater) = mount(1);
    let generation = updater.generation();
    assert_eq!(fs::read_link(m.join("..data")).unwrap(), Path::new(&generation));
    let names: BTreeSet<String> =
        fs::read_dir(&m.at).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let visible = ["a", "app.yaml", "b", "conf", "labels", "secret", "token"];
    let expected: BTreeSet<String> =
        visible.iter().map(|s| s.to_string()).chain([generation.clone(), "..data".into()]).collect();
    assert_eq!(names, expected);
    for name in visible {
        let link = m.join(name);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("..data").join(name), "{name}");
        let md = fs::symlink_metadata(&link).unwrap();
        assert!(md.file_type().is_symlink());
        assert_eq!((md.uid(), md.gid()), (0, FS_GROUP));
    }
    let ts = m.join(&generation);
    assert!(generation.starts_with("..") && generation.len() > "..2024_01_01_00_00_00.".len(), "{generation}");
    // With fsGroup: setgid directories, group fsGroup, group read on every file.
    assert_eq!(mode(&m.at), libc::S_IFDIR | 0o3777);
    assert_eq!(mode(&ts), libc::S_IFDIR | 0o2755);
    assert_eq!(mode(&ts.join("conf")), libc::S_IFDIR | 0o2755);
    assert_eq!(mode(&ts.join("a")), libc::S_IFREG | 0o644);
    assert_eq!(mode(&ts.join("conf/app.yaml")), libc::S_IFREG | 0o640);
    assert_eq!(mode(&ts.join("secret/password")), libc::S_IFREG | 0o440);
    assert_eq!(mode(&ts.join("token")), libc::S_IFREG | 0o640);
    for path in ["", "a", "conf", "secret/password", "token"] {
        let md = fs::symlink_metadata(ts.join(path)).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, FS_GROUP), "{path}");
    }
    // Through the visible names.
    assert_eq!(read(&m.join("a")), marked(1));
    assert_eq!(read(&m.join("conf/app.yaml")), "port: 1");
    assert_eq!(read(&m.join("secret/password")), "pw");
    assert_eq!(read(&m.join("labels")), "app=\"web\"");
    assert_eq!(read(&m.join("token")), "token-1");
    assert_eq!(mapped(&m.join("conf/app.yaml"), 7), b"port: 1");
    assert_eq!(fs::metadata(m.join("a")).unwrap().len(), marked(1).len() as u64);
    assert_eq!(errno(fs::metadata(m.join("nope"))), libc::ENOENT);
}

#[test]
fn every_write_fails_with_erofs() {
    let (m, updater) = mount(1);
    let ts = m.join(&updater.generation());
    for file in [m.join("a"), ts.join("a")] {
        assert_eq!(errno(OpenOptions::new().write(true).open(&file)), libc::EROFS);
        assert_eq!(errno(OpenOptions::new().append(true).open(&file)), libc::EROFS);
        assert_eq!(errno(fs::set_permissions(&file, fs::Permissions::from_mode(0o600))), libc::EROFS);
        assert_eq!(errno(std::os::unix::fs::chown(&file, Some(1), Some(1))), libc::EROFS);
        assert_eq!(errno(fs::remove_file(&file)), libc::EROFS);
    }
    assert_eq!(errno(File::create(m.join("new"))), libc::EROFS);
    assert_eq!(errno(File::create(ts.join("new"))), libc::EROFS);
    assert_eq!(errno(fs::create_dir(m.join("d"))), libc::EROFS);
    assert_eq!(errno(fs::remove_dir(ts.join("conf"))), libc::EROFS);
    assert_eq!(errno(fs::rename(m.join("a"), m.join("c"))), libc::EROFS);
    assert_eq!(errno(symlink("a", m.join("l"))), libc::EROFS);
    assert_eq!(errno(fs::hard_link(ts.join("a"), ts.join("h"))), libc::EROFS);
    assert_eq!(errno(fs::remove_file(m.join("..data"))), libc::EROFS);
    assert_eq!(read(&m.join("a")), marked(1));
}

#[test]
fn readers_see_all_old_or_all_new_while_updates_run() {
    let (m, updater) = mount(0);
    let root = m.at.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (root, stop, checks) = (root.clone(), stop.clone(), checks.clone());
        readers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // One resolution of ..data, then both files from that directory: a pair.
                let dir = root.join(fs::read_link(root.join("..data")).unwrap());
                let a = read(&dir.join("a"));
                let b = read(&dir.join("b"));
                assert_eq!(a, b, "a and b of {} differ", dir.display());
                // Each file through its visible path: never torn.
                for name in ["a", "b"] {
                    let text = read(&root.join(name));
                    let first = &text[..11];
                    assert!(text.len() == first.len() * 4096 && text == first.repeat(4096), "{name} is torn");
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut generations = BTreeSet::new();
    for generation in 1..=40 {
        let p = projection(&spec(generation, "pw"));
        let update = updater.update(p);
        assert!(update.changed);
        generations.insert(update.generation);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader failed");
    }
    assert_eq!(generations.len(), 40, "every update is a new directory");
    assert!(checks.load(Ordering::Relaxed) > 10, "readers ran {} checks", checks.load(Ordering::Relaxed));
    assert_eq!(read(&root.join("a")), marked(40));
}

#[test]
fn an_update_is_visible_at_once_and_replaces_names() {
    let (m, updater) = mount(1);
    let old = updater.generation();
    // Warm every cache the kernel has.
    assert_eq!(read(&m.join("a")), marked(1));
    assert_eq!(read(&m.join("conf/app.yaml")), "port: 1");
    assert_eq!(errno(fs::metadata(m.join("extra"))), libc::ENOENT);
    let text = spec(2, "pw").replace("  b: ", "  extra: ");
    let update = updater.update(projection(&text));
    let returned = Instant::now();
    assert_eq!(read(&m.join("a")), marked(2));
    assert_eq!(read(&m.join("conf/app.yaml")), "port: 2");
    assert_eq!(read(&m.join("extra")), marked(2));
    assert!(returned.elapsed() < Duration::from_millis(100));
    assert_eq!(errno(fs::metadata(m.join("b"))), libc::ENOENT);
    assert_eq!(fs::read_link(m.join("..data")).unwrap(), Path::new(&update.generation));
    let names: BTreeSet<String> =
        fs::read_dir(&m.at).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&update.generation) && !names.contains(&old) && !names.contains("b"), "{names:?}");
    assert!(names.contains("extra"));
}

#[test]
fn a_file_opened_before_an_update_keeps_its_bytes() {
    let (m, updater) = mount(1);
    let mut file = File::open(m.join("a")).unwrap();
    let mut head = [0u8; 11];
    file.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"gen-000001\n");
    let pinned = File::open(m.join("conf/app.yaml")).unwrap();
    updater.update(projection(&spec(2, "pw")));
    let mut rest = String::new();
    file.read_to_string(&mut rest).unwrap();
    assert_eq!(format!("gen-000001\n{rest}"), marked(1));
    let mut buf = [0u8; 7];
    pinned.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"port: 1");
    assert_eq!(read(&m.join("a")), marked(2));
}

#[test]
fn a_failed_or_empty_update_changes_nothing() {
    let (m, updater) = mount(1);
    let before = updater.generation();
    // Bad input never reaches the tree: the projection fails first, naming the field.
    let bad = [
        spec(2, "pw").replace("key: app.yaml", "key: nope"),
        spec(2, "pw").replace("path: conf/app.yaml", "path: ../app.yaml"),
        spec(2, "pw").replace("defaultMode: 0644", "defaultMode: 01000"),
        spec(2, "pw").replace("- configMap:\n    name: app\n- configMap", "- gitRepo: {}\n- configMap"),
        spec(2, "pw").replace("kind: Secret", "kind: Secret\nextra: 1"),
        format!("{}---\nkind: [ConfigMap\n", spec(2, "pw")),
    ];
    for text in &bad {
        let e = Projection::from_yaml(text).map(drop).expect_err("a bad spec projected");
        assert!(e.to_string().starts_with("document "), "{e}");
    }
    assert_eq!(updater.generation(), before);
    assert_eq!(read(&m.join("a")), marked(1));
    // The same content again: the kubelet keeps its directory.
    let update = updater.update(projection(&spec(1, "pw")));
    assert!(!update.changed);
    assert_eq!(fs::read_link(m.join("..data")).unwrap(), Path::new(&before));
}

#[test]
fn a_subpath_view_of_a_directory_follows_updates() {
    let (m, updater) = mount(1);
    let view = Mounted::new(updater.another_mount(), Some("conf"), false);
    assert_eq!(read(&view.join("app.yaml")), "port: 1");
    assert_eq!(mode(&view.at), libc::S_IFDIR | 0o2755);
    updater.update(projection(&spec(2, "pw")));
    assert_eq!(read(&view.join("app.yaml")), "port: 2");
    let names: Vec<String> =
        fs::read_dir(&view.at).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["app.yaml"]);
    assert_eq!(errno(File::create(view.join("x"))), libc::EROFS);
    drop(view);
    assert_eq!(read(&m.join("conf/app.yaml")), "port: 2");
}

#[test]
fn a_subpath_view_of_a_file_follows_updates() {
    let (_m, updater) = mount(1);
    let view = Mounted::new(updater.another_mount(), Some("conf/app.yaml"), true);
    assert_eq!(read(&view.at), "port: 1");
    let pinned = File::open(&view.at).unwrap();
    let text = spec(2, "pw").replace("'port: 2'", "'port: 2222'");
    updater.update(projection(&text));
    assert_eq!(read(&view.at), "port: 2222");
    assert_eq!(fs::metadata(&view.at).unwrap().len(), 10);
    let mut old = String::new();
    (&pinned).read_to_string(&mut old).unwrap();
    assert_eq!(old, "port: 1");
    assert_eq!(errno(OpenOptions::new().write(true).open(&view.at)), libc::EROFS);
    drop(pinned);
    assert_eq!(mapped(&view.at, 10), b"port: 2222");
}

/// The first `len` bytes of a file through a shared read-only mapping.
fn mapped(path: &Path, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    // SAFETY: a read-only shared mapping of an open file, copied out and unmapped before return.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED, "mmap {}: {}", path.display(), io::Error::last_os_error());
        let bytes = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        bytes
    }
}

#[test]
fn subpaths_are_checked_before_mounting() {
    let (_m, updater) = mount(1);
    let dir = tempfile::tempdir().unwrap();
    let err =
        |subpath: &str| updater.another_mount().mount(sessions(), dir.path(), Some(subpath)).map(drop).unwrap_err();
    let e = err("../x");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("must not contain '..'"), "{e}");
    assert_eq!(err("..data").kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err("/conf").kind(), io::ErrorKind::InvalidInput);
    assert_eq!(err("nope").kind(), io::ErrorKind::NotFound);
    let e = err("conf/app.yaml");
    assert!(e.to_string().contains("needs a regular file as mountpoint"), "{e}");
    assert!(!is_mountpoint(dir.path()));
}

/// The SPEC of the documentation, verbatim.
const EXAMPLE: &str = include_str!("fixtures/projected.yaml");

#[test]
fn the_documented_example_mounts_as_described() {
    let (fs_, updater) = ProjectedFs::new(projection(EXAMPLE));
    let m = Mounted::new(fs_, None, false);
    let names: BTreeSet<String> =
        fs::read_dir(&m.at).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let visible = ["bin", "config", "password", "pod", "token", "username"];
    let expected: BTreeSet<String> =
        visible.iter().map(|s| s.to_string()).chain([updater.generation(), "..data".into()]).collect();
    assert_eq!(names, expected);
    assert_eq!(read(&m.join("config/app.yaml")), "listen: :8080\nlog: info\n");
    assert_eq!(mode(&m.join("bin/run.sh")), libc::S_IFREG | 0o755);
    assert_eq!(read(&m.join("password")), "hunter2");
    assert_eq!(read(&m.join("username")), "app");
    assert_eq!(read(&m.join("pod/labels")), "app=\"web\"\ntier=\"frontend\"");
    assert_eq!(read(&m.join("pod/name")), "web-0");
    assert_eq!(read(&m.join("pod/cpu-limit-millicores")), "500");
    assert_eq!(read(&m.join("pod/memory-limit-mib")), "256");
    assert_eq!(read(&m.join("token")), "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl");
    assert_eq!(fs::metadata(m.join("token")).unwrap().mode(), libc::S_IFREG | 0o640);
    assert_eq!(fs::metadata(m.join("password")).unwrap().mode(), libc::S_IFREG | 0o644);
    assert_eq!(fs::metadata(m.join("password")).unwrap().gid(), 2000);
    // Editing one value and updating swaps the whole tree.
    let edited = EXAMPLE.replace("log: info", "log: debug");
    let update = updater.update(projection(&edited));
    assert!(update.changed);
    assert_eq!(read(&m.join("config/app.yaml")), "listen: :8080\nlog: debug\n");
}

// ---------------------------------------------------------------------------------------------
// Secrets stay in memory and out of logs.

/// Everything logged in this process, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static INIT: Once = Once::new();
    static LOGS: Mutex<Option<Arc<Mutex<Vec<u8>>>>> = Mutex::new(None);
    INIT.call_once(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        *LOGS.lock().unwrap() = Some(buffer);
    });
    LOGS.lock().unwrap().clone().unwrap()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn random_marker() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + "-secret"
}

/// Regular files under `dir` on its filesystem, changed since `since`, whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8], since: SystemTime, skip: &[&str], found: &mut Vec<PathBuf>) {
    let Ok(top) = fs::symlink_metadata(dir) else { return };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.file_name().is_some_and(|n| n == *s)) {
                continue;
            }
            let Ok(md) = fs::symlink_metadata(&path) else { continue };
            if md.dev() != top.dev() {
                continue; // another filesystem: our own mounts, for one
            }
            if md.is_dir() {
                stack.push(path);
            } else if md.is_file() && md.modified().is_ok_and(|t| t >= since) && holds(&path, needle) {
                found.push(path);
            }
        }
    }
}

fn holds(path: &Path, needle: &[u8]) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    let mut window = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        window.extend_from_slice(&chunk[..n]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = window.len().saturating_sub(needle.len() - 1);
        window.drain(..keep);
    }
}

#[test]
fn secret_bytes_reach_neither_the_disk_nor_a_log() {
    let logs = captured_logs();
    let since = SystemTime::now() - Duration::from_secs(1);
    let (first, second) = (random_marker(), random_marker());
    let (fs_, updater) = ProjectedFs::new(projection(&spec(1, &first)));
    let m = Mounted::new(fs_, None, false);
    assert_eq!(read(&m.join("secret/password")), first);
    updater.update(projection(&spec(2, &second)));
    assert_eq!(read(&m.join("secret/password")), second);
    let view = Mounted::new(updater.another_mount(), Some("secret/password"), true);
    assert_eq!(read(&view.at), second);
    // What Debug shows of a projection holding them.
    let shown = format!("{:?}", projection(&spec(3, &first)));
    assert!(!shown.contains(&first), "Debug shows the secret");
    drop(view);
    drop(m);

    let cwd = std::env::current_dir().unwrap();
    for marker in [&first, &second] {
        let mut found = Vec::new();
        for dir in [Path::new("/tmp"), Path::new("/var/tmp"), cwd.as_path()] {
            files_holding(dir, marker.as_bytes(), since, &["target", ".git"], &mut found);
        }
        assert!(found.is_empty(), "secret bytes found on disk in {found:?}");
        let logged = logs.lock().unwrap();
        assert!(!logged.windows(marker.len()).any(|w| w == marker.as_bytes()), "secret bytes were logged");
    }
    assert!(!logs.lock().unwrap().is_empty(), "nothing was logged: the capture does not work");
}
