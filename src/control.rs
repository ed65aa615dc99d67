//! The control protocol between the CLI (or mountd) and the daemon: one JSON request and one
//! JSON response per connection on a unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    /// A new volume: empty, a clone of a volume, or a restore of a snapshot. Without a
    /// capacity, a clone or restore takes its source's, a new volume has none.
    CreateVolume {
        name: String,
        #[serde(default)]
        capacity: Option<u64>,
        #[serde(default)]
        from: Option<VolumeSource>,
    },
    /// Cut snapshot `volume@name`.
    CreateSnapshot {
        volume: String,
        name: String,
    },
    /// Every snapshot, or those of one volume.
    ListSnapshots {
        #[serde(default)]
        volume: Option<String>,
    },
    /// Delete snapshot `VOLUME@SNAP`.
    DeleteSnapshot {
        name: String,
    },
    ListVolumes,
    InspectVolume {
        name: String,
    },
    DeleteVolume {
        name: String,
    },
    ResizeVolume {
        name: String,
        capacity: u64,
    },
    Mount {
        volume: String,
        mountpoint: PathBuf,
        read_only: bool,
        passthrough: bool,
        /// Show only this directory of the volume (a subPath view).
        #[serde(default)]
        subpath: Option<String>,
        /// Make the subpath's missing directories.
        #[serde(default)]
        create: bool,
    },
    Umount {
        mountpoint: PathBuf,
    },
    /// Mount a projected tree built from `spec` (its text: the CLI reads the file).
    ProjectMount {
        spec: SpecText,
        mountpoint: PathBuf,
        #[serde(default)]
        subpath: Option<String>,
    },
    /// Swap a new generation built from `spec` into the projected tree at `mountpoint`.
    ProjectUpdate {
        mountpoint: PathBuf,
        spec: SpecText,
    },
    ListMounts,
    Fsck {
        repair: bool,
    },
    Shutdown,
}

/// What a new volume starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeSource {
    /// Clone this volume as it is now.
    Volume(String),
    /// Restore this snapshot (`VOLUME@SNAP`).
    Snapshot(String),
}

/// The text of a projection SPEC. It may hold secrets, so `Debug` shows only its size.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecText(pub String);

impl std::fmt::Debug for SpecText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<spec, {} bytes>", self.0.len())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no volfs daemon is listening on {0}")]
    NotRunning(PathBuf),
    #[error("{0}")]
    Failed(String),
}

/// The socket of the daemon serving `pool`: `--socket` when given, else the path the daemon
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

pub const DEFAULT_SOCKET: &str = "volfs.sock";
/// A file in the pool naming the socket of the daemon that serves it.
pub const SOCKET_RECORD: &str = "socket";

/// Sends one request and waits for its answer.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, CallError> {
    let mut stream = UnixStream::connect(socket).map_err(|_| CallError::NotRunning(socket.to_path_buf()))?;
    let failed = |e: std::io::Error| CallError::Failed(format!("talking to the daemon on {}: {e}", socket.display()));
    // Mounting or deleting a large volume can take a while; a hung daemon must not hang the CLI.
    stream.set_read_timeout(Some(Duration::from_secs(300))).map_err(failed)?;
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    stream.write_all(&line).map_err(failed)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(failed)?;
    if answer.is_empty() {
        return Err(CallError::Failed("the daemon closed the connection without answering".into()));
    }
    match serde_json::from_str(&answer) {
        Ok(Response::Ok(v)) => Ok(v),
        Ok(Response::Error(e)) => Err(CallError::Failed(e)),
        Err(e) => Err(CallError::Failed(format!("unreadable answer from the daemon: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let r = Request::Mount {
            volume: "a".into(),
            mountpoint: "/m".into(),
            read_only: true,
            passthrough: false,
            subpath: Some("x/y".into()),
            create: true,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"op":"umount","mountpoint":"/m","extra":1}"#).is_err());
    }

    #[test]
    fn spec_text_is_redacted_in_debug() {
        let r = Request::ProjectUpdate { mountpoint: "/m".into(), spec: SpecText("password: hunter2".into()) };
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2") && shown.contains("17 bytes"), "{shown}");
    }
}
