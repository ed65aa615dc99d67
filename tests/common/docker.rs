//! A private Docker daemon for tests: its own data root, exec root and API socket under a temp
//! dir, no network set-up, and a local image `busybox:local` made without a registry (busybox
//! plus its applet links, imported from a tar stream). Stopped and cleaned up on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{lazy_unmount, mountpoints_under, wait_child};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 19] = [
    "sh", "cat", "dd", "echo", "ls", "df", "sleep", "mkdir", "rm", "touch", "wc", "head", "stat", "id", "test", "sync",
    "true", "false", "grep",
];

/// Where dockerd looks for the volume plugin named `driver`.
pub fn plugin_socket(driver: &str) -> PathBuf {
    let dir = Path::new("/run/docker/plugins");
    std::fs::create_dir_all(dir).expect("creating /run/docker/plugins");
    dir.join(format!("{driver}.sock"))
}

pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd and makes `busybox:local`.
    pub fn start() -> Self {
        for bin in [DOCKERD, DOCKER, BUSYBOX] {
            assert!(Path::new(bin).exists(), "{bin} is missing: run scripts/deps.sh (docker.io, busybox-static)");
        }
        let dir = tempfile::Builder::new().prefix("dk").tempdir_in("/tmp").expect("temp dir");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg(format!("--data-root={}", dir.path().join("data").display()))
            .arg(format!("--exec-root={}", dir.path().join("exec").display()))
            .arg(format!("--pidfile={}", dir.path().join("dockerd.pid").display()))
            .arg(format!("--host=unix://{}", dir.path().join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let d = Dockerd { dir, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["info"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd did not answer within 60 s: {}", d.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
        d.import_busybox();
        d
    }

    fn import_busybox(&self) {
        let root = self.dir.path().join("image");
        for d in ["bin", "tmp", "data", "proc", "sys", "dev", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar = Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).output().expect("tar");
        assert!(tar.status.success());
        let mut import = self
            .command(&["import", "-", "busybox:local"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        let out = import.wait_with_output().unwrap();
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("--host").arg(format!("unix://{}", self.dir.path().join("docker.sock").display())).args(args);
        // The legacy builder needs no BuildKit daemon.
        cmd.env("DOCKER_BUILDKIT", "0").stdin(Stdio::null());
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        super::run_bounded(self.command(args))
    }

    /// Runs a docker command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Builds image `tag` from a Dockerfile's text (an empty context otherwise).
    pub fn build(&self, tag: &str, dockerfile: &str) {
        let context = self.dir.path().join(format!("context-{}", tag.replace([':', '/'], "-")));
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        self.ok(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals the dockerd this fixture started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_child(&mut child, Duration::from_secs(20)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for at in mountpoints_under(self.dir.path()) {
            lazy_unmount(&at);
            let _ = Command::new("umount").arg("-l").arg(&at).status();
        }
    }
}
