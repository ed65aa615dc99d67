//! A running `mountd serve` for tests: its own state dir and pool (inside a `TestPool`), a
//! CSI socket, optionally a Docker plugin socket; killed or stopped on demand, stopped on drop
//! (the data plane it started is stopped by the `TestPool`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{wait_child, TestPool, VOLFS};

/// The mountd binary, built beside volfs by `cargo build --release --workspace`.
pub fn mountd_bin() -> PathBuf {
    let bin = Path::new(VOLFS).with_file_name("mountd");
    assert!(bin.is_file(), "{} is missing: run `cargo build --release --workspace` first", bin.display());
    bin
}

pub struct Mountd {
    pub pool: TestPool,
    pub state_dir: PathBuf,
    pub csi_socket: PathBuf,
    pub docker_socket: Option<PathBuf>,
    pub node_id: String,
    /// More `mountd serve` flags (standalone mode's node labels, runtime).
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl Mountd {
    /// Starts mountd serving CSI only.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts mountd; with `docker_socket` it also serves the Docker plugin there.
    pub fn start_with(docker_socket: Option<PathBuf>) -> Self {
        Self::start_with_args(docker_socket, Vec::new())
    }

    /// Starts mountd with more `serve` flags.
    pub fn start_with_args(docker_socket: Option<PathBuf>, extra_args: Vec<String>) -> Self {
        let pool = TestPool::new();
        let state_dir = pool.root().join("state");
        let csi_socket = pool.root().join("csi.sock");
        let node_id = "node-1".to_string();
        let mut m = Mountd { pool, state_dir, csi_socket, docker_socket, node_id, extra_args, child: None };
        m.restart();
        m
    }

    /// `mountd ARGS` as a client of this instance (its state dir in MOUNTD_STATE).
    pub fn client(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new(mountd_bin())
            .args(args)
            .env("MOUNTD_STATE", &self.state_dir)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running mountd");
        if let Some(text) = stdin {
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing manifests");
        }
        child.wait_with_output().expect("waiting for mountd")
    }

    /// The arguments of `mountd serve` for this instance.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            format!("--state-dir={}", self.state_dir.display()),
            format!("--node-id={}", self.node_id),
            format!("--pool={}", self.pool.path().display()),
            format!("--volfs-bin={VOLFS}"),
            format!("--csi-endpoint=unix://{}", self.csi_socket.display()),
        ];
        if let Some(s) = &self.docker_socket {
            args.push(format!("--docker-socket={}", s.display()));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts mountd (again) and waits until its sockets accept connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mountd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.pool.root().join("mountd.log"))
            .expect("opening mountd's log");
        let child = Command::new(mountd_bin())
            .args(self.serve_args())
            .env("MOUNTD_LOG", "debug,h2=warn,tower=warn,hyper=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting mountd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let api_socket = self.state_dir.join("mountd.sock");
        let sockets: Vec<PathBuf> =
            [self.csi_socket.clone(), api_socket].into_iter().chain(self.docker_socket.clone()).collect();
        while !sockets.iter().all(|s| std::os::unix::net::UnixStream::connect(s).is_ok()) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mountd exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "mountd did not listen within 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("mountd is running");
        child.kill().expect("killing mountd");
        child.wait().expect("reaping mountd");
    }

    /// SIGTERM and wait: an orderly stop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signals the child this fixture started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        if wait_child(&mut child, Duration::from_secs(20)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mountd did not stop within 20 s of SIGTERM: {}", self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.pool.root().join("mountd.log")).unwrap_or_default()
    }

    /// `unix://…`, as gRPC clients name the CSI endpoint.
    pub fn csi_endpoint(&self) -> String {
        format!("unix://{}", self.csi_socket.display())
    }
}

impl Drop for Mountd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals the child this fixture started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_child(&mut child, Duration::from_secs(20)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The memory pool's data plane (emptyDir medium Memory), when mountd started one.
        let memory_pool = self.state_dir.join("memory/pool");
        if memory_pool.join("volfs.sock").exists() {
            let _ = Command::new(VOLFS).arg("--pool").arg(&memory_pool).arg("shutdown").output();
        }
        if std::thread::panicking() {
            eprintln!("---- mountd log ----\n{}", self.log());
        }
    }
}
