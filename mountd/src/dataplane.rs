//! The data plane as mountd sees it: the `volfs serve` daemon of one pool, reached through the
//! control-protocol client. When none answers, mountd starts one in a process group of its own,
//! so the FUSE mounts it serves outlive mountd (unless a service manager runs it).

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use volfs_api::{socket_path, Client, ErrorKind, Pong};

use crate::error::{Error, Result};

/// How long a data-plane request may take; mounts and deletes of large volumes are the slow ones.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// How long a started daemon may take to answer.
const START_WAIT: Duration = Duration::from_secs(15);

pub struct DataPlane {
    client: Client,
    pool: PathBuf,
    socket: Option<PathBuf>,
    /// What starts a data plane; `None` when another manager runs it.
    volfs: Option<PathBuf>,
    log: PathBuf,
    starting: tokio::sync::Mutex<()>,
}

impl DataPlane {
    /// The data plane of `pool`, on `socket` when given (else the pool's own), started from the
    /// `volfs` binary when needed (unless `volfs` is `None`), logging to `log`.
    pub fn new(pool: PathBuf, socket: Option<PathBuf>, volfs: Option<PathBuf>, log: PathBuf) -> Self {
        let client = Client::new(socket_path(&pool, socket.as_deref()), ANSWER_WAIT);
        DataPlane { client, pool, socket, volfs, log, starting: tokio::sync::Mutex::new(()) }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn pool(&self) -> &Path {
        &self.pool
    }

    /// Answers once a data plane serves the pool, starting one if none runs.
    pub async fn ensure_running(&self) -> Result<Pong> {
        let _one_start = self.starting.lock().await;
        match self.client.ping().await {
            Ok(pong) => return Ok(pong),
            Err(e) if e.kind != ErrorKind::NotRunning => return Err(e.into()),
            Err(_) => {}
        }
        let mut child = self.spawn()?;
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if let Ok(pong) = self.client.ping().await {
                tracing::info!(pool = %self.pool.display(), pid = pong.pid, "started the data plane");
                // It runs on by itself; reap it if it ever exits while mountd runs.
                std::thread::spawn(move || child.wait());
                return Ok(pong);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<_> = log.lines().rev().take(3).collect();
                return Err(Error::Unavailable(format!(
                    "the data plane for pool {} exited ({status}): {}",
                    self.pool.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "the data plane for pool {} did not answer within {START_WAIT:?}; see {}",
                    self.pool.display(),
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn(&self) -> Result<std::process::Child> {
        let Some(volfs) = &self.volfs else {
            return Err(Error::Unavailable(format!(
                "no data plane serves pool {} yet (its service manager starts it)",
                self.pool.display()
            )));
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(|e| Error::Internal(format!("opening {}: {e}", self.log.display())))?;
        let stderr = log.try_clone().map_err(|e| Error::Internal(e.to_string()))?;
        let mut cmd = Command::new(volfs);
        cmd.arg("serve").arg("--pool").arg(&self.pool);
        if let Some(socket) = &self.socket {
            cmd.arg("--socket").arg(socket);
        }
        // Its own process group: a signal to mountd's group (Ctrl-C, a service stop) is not for it.
        cmd.stdin(Stdio::null()).stdout(log).stderr(stderr).process_group(0);
        tracing::info!(volfs = %volfs.display(), pool = %self.pool.display(), "starting the data plane");
        cmd.spawn().map_err(|e| Error::Unavailable(format!("starting {}: {e}", volfs.display())))
    }

    /// The pool's filesystem: (total bytes, bytes free for volumes).
    pub fn pool_space(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.pool)
            .map_err(|e| Error::Internal(format!("statvfs {}: {}", self.pool.display(), std::io::Error::from(e))))?;
        Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }
}
