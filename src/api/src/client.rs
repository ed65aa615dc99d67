//! The client: one connection per request, an answer within the client's timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::{ApiError, ErrorKind};
use crate::types::{MountInfo, Pong, Request, Response, SnapshotInfo, SnapshotRef, VolumeInfo, VolumeSource};

pub const DEFAULT_SOCKET: &str = "volfs.sock";
/// A file in the pool naming the socket of the daemon that serves it.
pub const SOCKET_RECORD: &str = "socket";

/// The socket of the daemon serving `pool`: `explicit` when given, else the path the daemon
/// recorded in the pool, else the default inside the pool.
pub fn socket_path(pool: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::fs::read_to_string(pool.join(SOCKET_RECORD)) {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p.trim()),
        _ => pool.join(DEFAULT_SOCKET),
    }
}

/// Talks to the data plane listening on one socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client that waits at most `timeout` for each answer.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Client { socket: socket.into(), timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, request: &Request) -> Result<Value, ApiError> {
        let socket = self.socket.display();
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ApiError::new(ErrorKind::NotRunning, format!("no volfs daemon is listening on {socket}")))?;
        let exchange = async {
            let mut line = serde_json::to_vec(request).expect("requests serialise");
            line.push(b'\n');
            stream.write_all(&line).await?;
            let mut answer = String::new();
            BufReader::new(&mut stream).read_line(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let unavailable = |why: String| ApiError::new(ErrorKind::Unavailable, why);
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unavailable(format!("the daemon on {socket} did not answer within {:?}", self.timeout)))?
            .map_err(|e| unavailable(format!("talking to the daemon on {socket}: {e}")))?;
        if answer.is_empty() {
            return Err(unavailable(format!("the daemon on {socket} closed the connection without answering")));
        }
        match serde_json::from_str(&answer) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Error(e)) => Err(e),
            Err(e) => Err(ApiError::internal(format!("unreadable answer from the daemon on {socket}: {e}"))),
        }
    }

    /// `call` for a caller without an async runtime (the CLI).
    pub fn call_blocking(&self, request: &Request) -> Result<Value, ApiError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime starts")
            .block_on(self.call(request))
    }

    async fn typed<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ApiError> {
        let value = self.call(request).await?;
        serde_json::from_value(value).map_err(|e| ApiError::internal(format!("unexpected answer to {request:?}: {e}")))
    }

    pub async fn ping(&self) -> Result<Pong, ApiError> {
        self.typed(&Request::Ping).await
    }

    pub async fn create_volume(
        &self,
        name: &str,
        capacity: Option<u64>,
        from: Option<VolumeSource>,
    ) -> Result<VolumeInfo, ApiError> {
        // The default inode limit (one per 16 KiB of capacity) is the one Kubernetes volumes get.
        self.typed(&Request::CreateVolume { name: name.to_string(), capacity, inodes: None, from }).await
    }

    pub async fn inspect_volume(&self, name: &str) -> Result<VolumeInfo, ApiError> {
        self.typed(&Request::InspectVolume { name: name.to_string() }).await
    }

    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ApiError> {
        self.typed(&Request::ListVolumes).await
    }

    pub async fn resize_volume(&self, name: &str, capacity: u64) -> Result<VolumeInfo, ApiError> {
        self.typed(&Request::ResizeVolume { name: name.to_string(), capacity }).await
    }

    pub async fn delete_volume(&self, name: &str) -> Result<(), ApiError> {
        self.call(&Request::DeleteVolume { name: name.to_string() }).await.map(drop)
    }

    pub async fn create_snapshot(&self, snapshot: &SnapshotRef) -> Result<SnapshotInfo, ApiError> {
        self.typed(&Request::CreateSnapshot { snapshot: snapshot.clone() }).await
    }

    pub async fn list_snapshots(&self, volume: Option<&str>) -> Result<Vec<SnapshotInfo>, ApiError> {
        self.typed(&Request::ListSnapshots { volume: volume.map(str::to_string) }).await
    }

    pub async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> Result<(), ApiError> {
        self.call(&Request::DeleteSnapshot { snapshot: snapshot.clone() }).await.map(drop)
    }

    /// Mounts `volume` (or its `snapshot`) at `mountpoint`; see `Request::Mount`.
    pub async fn mount(&self, request: Request) -> Result<MountInfo, ApiError> {
        debug_assert!(matches!(request, Request::Mount { .. }));
        self.typed(&request).await
    }

    pub async fn umount(&self, mountpoint: &Path) -> Result<(), ApiError> {
        self.call(&Request::Umount { mountpoint: mountpoint.to_path_buf() }).await.map(drop)
    }

    pub async fn list_mounts(&self) -> Result<Vec<MountInfo>, ApiError> {
        self.typed(&Request::ListMounts).await
    }

    pub async fn stats(&self) -> Result<crate::PoolStats, ApiError> {
        self.typed(&Request::Stats { snapshot_bytes: false }).await
    }
}
