//! A private Docker daemon for tests: Debian's dockerd 20.10 (`/usr/sbin/dockerd`, driven by
//! `/usr/bin/docker`) with its own config file, data root, exec root, pid file and API socket in a
//! short temp dir under /tmp, no iptables and no bridge (containers run with `--network none`),
//! and a local image `busybox:local` made without a registry: busybox-static and its applet links,
//! imported from a tar stream.
//!
//! Each `Dockerd` is a daemon of its own: dockerd starts its own containerd under its exec root,
//! so tests in one binary may run several side by side. What they still share is the host's
//! `/run/docker/plugins`, where every daemon looks for volume plugins: each test names its
//! plugin uniquely (see `plugin_socket`).
//!
//! Images are built by the legacy builder (`DOCKER_BUILDKIT=0`): the 20.10 client uses it by
//! default, and pinning it keeps a caller's environment from choosing BuildKit.
//!
//! On drop: every container is removed, dockerd is stopped (SIGTERM, then SIGKILL after 20 s;
//! its containerd dies with it), what it left mounted under the temp dir is unmounted, and the
//! temp dir is removed.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{cpath, mountpoints_under, run_bounded, wait_child};

/// Debian's docker.io puts the daemon in /usr/sbin and the client in /usr/bin; a newer client
/// elsewhere on PATH must not be picked up.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
/// What dockerd runs (containerd, runc, docker-init) comes from Debian's directories only.
const DAEMON_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// How long dockerd may take to answer `docker info`.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long dockerd may take to stop after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(20);
/// The applets `busybox:local` has in /bin.
const APPLETS: &[&str] = &[
    "sh", "cat", "dd", "echo", "ls", "df", "sleep", "mkdir", "rm", "touch", "wc", "head", "stat", "id", "test", "sync",
    "true", "false", "grep",
];
/// The local image every daemon has.
pub const BUSYBOX_IMAGE: &str = "busybox:local";

/// Where every dockerd on this host looks for the volume plugin named `driver` (the directory
/// is made if missing).
pub fn plugin_socket(driver: &str) -> PathBuf {
    let dir = Path::new("/run/docker/plugins");
    std::fs::create_dir_all(dir).expect("creating /run/docker/plugins");
    dir.join(format!("{driver}.sock"))
}

/// A running private dockerd; stopped and cleaned up on drop.
pub struct Dockerd {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd, waits until it answers, and makes `busybox:local`.
    pub fn start() -> Self {
        for (bin, package) in [(DOCKERD, "docker.io"), (DOCKER, "docker.io"), (BUSYBOX, "busybox-static")] {
            assert!(Path::new(bin).is_file(), "{bin} is missing: run scripts/deps.sh (Debian package {package})");
        }
        let dir = tempfile::Builder::new().prefix("dk").tempdir_in("/tmp").expect("creating dockerd's temp dir");
        let root = dir.path();
        // An empty config file: the host's /etc/docker/daemon.json must not apply.
        std::fs::write(root.join("daemon.json"), "{}\n").expect("writing daemon.json");
        std::fs::create_dir(root.join("client")).expect("creating the client's config dir");
        let log = std::fs::File::create(root.join("dockerd.log")).expect("creating dockerd.log");
        let stderr = log.try_clone().expect("dup of dockerd.log");
        let child = Command::new(DOCKERD)
            .arg(flag("--config-file", root.join("daemon.json")))
            .arg(flag("--data-root", root.join("data")))
            .arg(flag("--exec-root", root.join("exec")))
            .arg(flag("--pidfile", root.join("dockerd.pid")))
            .arg("-H")
            .arg(format!("unix://{}", root.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .env("PATH", DAEMON_PATH)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("starting dockerd");
        // From here on a panic drops the fixture, which stops dockerd and cleans up.
        let mut d = Dockerd { dir: Some(dir), child: Some(child) };
        d.wait_until_answering();
        d.import_busybox();
        d
    }

    /// The temp dir that holds everything of this daemon.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the temp dir lives until drop").path()
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    /// `docker ARGS...` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args))
    }

    /// Runs a docker command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("docker printed UTF-8")
    }

    /// Builds image `tag` from a Dockerfile's text, with an otherwise empty context. Panics with
    /// the build's output when it fails; returns the output (the build log is on stdout).
    pub fn build(&self, tag: &str, dockerfile: &str) -> Output {
        let context = self.dir().join(format!("build-{}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "-")));
        std::fs::create_dir_all(&context).expect("creating the build context");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("writing the Dockerfile");
        let context = context.to_str().expect("UTF-8 path");
        let out = self.docker(&["build", "-t", tag, context]);
        assert!(
            out.status.success(),
            "docker build -t {tag} failed ({}):\n{dockerfile}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H").arg(format!("unix://{}", self.socket().display())).args(args);
        // The caller's client settings (contexts, credential helpers, a DOCKER_HOST) stay out.
        for var in ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "BUILDKIT_PROGRESS"] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_CONFIG", self.dir().join("client")).env("DOCKER_BUILDKIT", "0").stdin(Stdio::null());
        cmd
    }

    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if self.docker(&["info", "--format", "{{.ServerVersion}}"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("polling dockerd")) {
                self.child = None;
                panic!("dockerd exited ({status}) before answering; its log ends:\n{}", self.log_tail(30));
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer `docker info` within {START_WAIT:?}; its log ends:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `busybox:local`: /bin/busybox and its applet links, imported from `tar -c`.
    fn import_busybox(&self) {
        let root = self.dir().join("busybox");
        for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).expect("creating the image's directories");
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).expect("chmod /tmp");
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copying busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("linking an applet");
        }
        let tar = Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).output().expect("running tar");
        assert!(tar.status.success(), "tar -c of the image failed: {}", String::from_utf8_lossy(&tar.stderr));
        let mut import = self
            .command(&["import", "-", BUSYBOX_IMAGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running docker import");
        import.stdin.take().expect("import's stdin").write_all(&tar.stdout).expect("feeding docker import");
        let out = import.wait_with_output().expect("waiting for docker import");
        assert!(out.status.success(), "docker import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect::<Vec<_>>();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
            // SAFETY: signals the dockerd this fixture started and has not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_child(&mut child, STOP_WAIT).is_none() {
                eprintln!("dockerd did not stop within {STOP_WAIT:?} of SIGTERM; killed it");
            }
        }
        let Some(dir) = self.dir.take() else { return };
        // dockerd makes its data root a mount of its own; container layers and network
        // namespaces may be left too after a kill. Innermost first.
        for at in mountpoints_under(dir.path()) {
            // SAFETY: a valid C string; a lazy unmount of a mount under our own temp dir.
            unsafe { libc::umount2(cpath(&at).as_ptr(), libc::MNT_DETACH) };
        }
        let path = dir.path().to_path_buf();
        if let Err(e) = dir.close() {
            eprintln!("removing dockerd's temp dir {}: {e}", path.display());
        }
    }
}

fn flag(name: &str, value: impl AsRef<OsStr>) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("{name}="));
    arg.push(value.as_ref());
    arg
}

/// One Docker volume-plugin call over its unix socket, as dockerd makes it.
pub fn plugin_call(socket: &Path, call: &str, body: &str) -> PluginAnswer {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connecting to the plugin socket");
    let request = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1+json\r\n\
         Content-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string());
    PluginAnswer {
        status: status.unwrap_or_else(|| panic!("no status: {head}")),
        content_type: content_type.unwrap_or_default(),
        body: body.to_string(),
    }
}

/// The plugin's answer: HTTP status, content type, body.
pub struct PluginAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl PluginAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The protocol's `Err`: empty when the call succeeded.
    pub fn err(&self) -> String {
        self.json()["Err"].as_str().unwrap_or_else(|| panic!("no Err: {}", self.body)).to_string()
    }
}
