//! The daemon: serves one pool. It holds the pool open, keeps the table of FUSE sessions (one
//! per mount) and answers control requests on a unix socket. `Service` is also what the CLI
//! runs in-process when no daemon serves the pool, so both paths share one implementation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use serde_json::{json, Value};
use volfs_api::{
    ApiError, PoolStats, Request, Response, SnapshotRef, VolumeInfo, VolumeSource, VolumeStats, DEFAULT_SOCKET,
    SOCKET_RECORD,
};

use crate::fuse::coherence::Coherence;
use crate::fuse::session::Sessions;
use crate::fuse::MountOptions;
use crate::names::VolumeName;
use crate::pool::{Pool, Source};
use crate::stats::Counters;
use mounts::Mounted;

mod mounts;

pub use mounts::mount_table;

/// When the daemon started (unix seconds), how long opening the pool took, and whether that
/// recovered from an unclean stop.
#[derive(Clone, Copy, Default)]
struct Start {
    unix: f64,
    seconds: f64,
    recovered: bool,
}

/// Answers control requests against one open pool.
pub struct Service {
    pool: Arc<Pool>,
    mounts: Mutex<HashMap<PathBuf, Mounted>>,
    /// Mountpoints with a mount or an unmount under way, and the volume each concerns: the
    /// mount table is not locked across the mount and unmount syscalls, so many go at once.
    in_flight: Mutex<HashMap<PathBuf, String>>,
    /// Whether this process is the daemon (mounts are possible, fsck runs online).
    daemon: bool,
    stopping: AtomicBool,
    /// How long a stop may take before the process exits anyway (the daemon only).
    stop_limit: Option<Duration>,
    coherence: Arc<Coherence>,
    /// The workers that serve the kernel connections of projected trees (the daemon only).
    sessions: Option<Arc<Sessions>>,
    next_session: AtomicU64,
    counters: Counters,
    start: Start,
}

impl Service {
    pub fn new(pool: Pool, daemon: bool) -> Self {
        Service {
            pool: Arc::new(pool),
            mounts: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            daemon,
            stopping: AtomicBool::new(false),
            stop_limit: None,
            coherence: Arc::new(Coherence::new()),
            sessions: None,
            next_session: AtomicU64::new(1),
            counters: Counters::default(),
            start: Start::default(),
        }
    }

    pub fn handle(&self, request: Request) -> Result<Value, ApiError> {
        match request {
            Request::Ping => Ok(json!({ "pid": std::process::id(), "pool": self.pool.dir() })),
            Request::CreateVolume { name, capacity, inodes, from } => {
                let volume = self.create_volume(&name, capacity, inodes, from)?;
                Ok(json!(volume))
            }
            Request::CreateSnapshot { snapshot } => Ok(json!(self.create_snapshot(&snapshot)?)),
            Request::ListSnapshots { volume } => Ok(json!(self.pool.snapshots(volume.as_deref())?)),
            Request::DeleteSnapshot { snapshot } => {
                let name = snapshot_name(&snapshot)?;
                if let Some(at) = self.mounted_at(&self.mounts(), &name) {
                    return Err(ApiError::busy(format!(
                        "snapshot {name} is mounted at {}; unmount it first",
                        at.display()
                    )));
                }
                self.pool.delete_snapshot(&name)?;
                self.counters.remove(&name);
                Ok(json!({ "deleted": name }))
            }
            Request::ListVolumes => Ok(json!(self.pool.volumes()?)),
            Request::InspectVolume { name } => {
                let volume = self.pool.volume(&name)?;
                let mut info = self.pool.volume_info(&volume)?;
                info.mounts = self.mount_list().into_iter().filter(|m| m.volume == name).collect();
                Ok(json!(info))
            }
            Request::DeleteVolume { name } => {
                let mounts = self.mounts();
                if let Some((at, _)) = mounts.iter().find(|(_, m)| m.volume() == name) {
                    return Err(ApiError::busy(format!(
                        "volume {name} is mounted at {}; unmount it first",
                        at.display()
                    )));
                }
                self.pool.delete_volume(&name)?;
                self.counters.remove(&name);
                Ok(json!({ "deleted": name }))
            }
            Request::ResizeVolume { name, capacity } => {
                if capacity == 0 {
                    return Err(ApiError::invalid(format!("volume {name}: a capacity must be more than zero bytes")));
                }
                let volume = self.pool.resize_volume(&name, capacity)?;
                Ok(json!(self.pool.volume_info(&volume)?))
            }
            Request::Mount { volume, snapshot, mountpoint, read_only, passthrough, subpath, create } => {
                let source = match snapshot {
                    Some(name) => snapshot_name(&SnapshotRef { volume, name })?,
                    None => volume,
                };
                // A snapshot is read-only whatever the mount asks.
                let read_only = read_only || source.contains('@');
                let options = MountOptions { read_only, passthrough };
                let info = self.mount(&source, subpath.as_deref().unwrap_or(""), create, &mountpoint, options)?;
                Ok(json!(info))
            }
            Request::Umount { mountpoint } => self.umount(&mountpoint),
            Request::ProjectMount { spec, mountpoint, subpath } => {
                self.project_mount(&spec.0, &mountpoint, subpath.as_deref())
            }
            Request::ProjectUpdate { mountpoint, spec } => self.project_update(&mountpoint, &spec.0),
            Request::ListMounts => Ok(json!(self.mount_list())),
            Request::Stats { snapshot_bytes } => Ok(json!(self.stats(snapshot_bytes)?)),
            Request::Fsck { repair } => {
                let report = crate::fsck::check(&self.pool, repair, !self.daemon)?;
                Ok(json!(report))
            }
            Request::Shutdown => {
                self.stop();
                Ok(json!({ "stopped": true }))
            }
        }
    }

    /// Creates a volume; asking again for one that exists with the capacity it would get
    /// answers that volume.
    fn create_volume(
        &self,
        name: &str,
        capacity: Option<u64>,
        inodes: Option<u64>,
        from: Option<VolumeSource>,
    ) -> Result<VolumeInfo, ApiError> {
        let name = VolumeName::parse(name).map_err(ApiError::invalid)?;
        if capacity == Some(0) {
            return Err(ApiError::invalid(format!("volume {name}: a capacity must be more than zero bytes")));
        }
        if inodes == Some(0) {
            return Err(ApiError::invalid(format!("volume {name}: an inode limit must be at least 1 (the root)")));
        }
        let source = match &from {
            None => Source::Nothing,
            Some(VolumeSource::Volume(v)) => Source::Volume(v.clone()),
            Some(VolumeSource::Snapshot(s)) => Source::Snapshot(snapshot_name(s)?),
        };
        match self.pool.create_volume_from(&name, &source, capacity, inodes) {
            Ok(volume) => Ok(self.pool.volume_info(&volume)?),
            Err(crate::Error::Exists(what)) => {
                let existing = self.pool.volume(name.as_str())?;
                let wanted = match (&source, capacity) {
                    (_, Some(c)) => c,
                    (Source::Nothing, None) => 0,
                    (Source::Volume(s) | Source::Snapshot(s), None) => {
                        self.pool.volume(s).map(|v| v.capacity).unwrap_or(0)
                    }
                };
                if existing.capacity != wanted {
                    return Err(ApiError::exists(format!(
                        "volume {name} already exists with {}",
                        capacity_text(existing.capacity)
                    )));
                }
                if inodes.is_some_and(|n| existing.inode_limit() != Some(n)) {
                    let limit =
                        existing.inode_limit().map_or("no inode limit".into(), |n| format!("a limit of {n} inodes"));
                    return Err(ApiError::exists(format!("volume {name} already exists with {limit}")));
                }
                tracing::debug!(volume = %name, "create of an existing volume answered with it ({what})");
                Ok(self.pool.volume_info(&existing)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Cuts a snapshot; asking again for one that exists answers it.
    fn create_snapshot(&self, snapshot: &SnapshotRef) -> Result<volfs_api::SnapshotInfo, ApiError> {
        let full = snapshot_name(snapshot)?;
        let (volume, name) = crate::pool::parse_snapshot_name(&full)?;
        match self.pool.create_snapshot(&volume, &name) {
            Ok(cut) => Ok(self.pool.snapshot_info(&cut, 0)?),
            Err(crate::Error::Exists(_)) => {
                let existing = self.pool.volume(&full)?;
                Ok(self.pool.snapshot_info(&existing, 0)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every volume's and snapshot's figures; with `snapshot_bytes`, also what each snapshot
    /// alone holds (a walk of every inode, so only when asked).
    pub fn stats(&self, snapshot_bytes: bool) -> Result<PoolStats, ApiError> {
        let mounts = self.mount_list();
        let core = self.pool.core();
        let all = core.meta().volumes()?;
        let exclusive: HashMap<String, u64> = match snapshot_bytes && all.iter().any(|v| v.is_snapshot()) {
            true => self.pool.snapshots(None)?.into_iter().map(|s| (s.name, s.exclusive_bytes)).collect(),
            false => HashMap::new(),
        };
        let mut volumes = Vec::new();
        for v in all {
            let (volume, snapshot) = match &v.snapshot_of {
                Some(of) => (of.clone(), v.name.split_once('@').map(|(_, s)| s.to_string())),
                None => (v.name.clone(), None),
            };
            let mounted: Vec<_> = mounts.iter().filter(|m| m.volume == v.name).collect();
            let subpath_mounts = mounted.iter().filter(|m| !m.subpath.is_empty()).count() as u64;
            let mut stats = VolumeStats {
                volume,
                snapshot,
                capacity_bytes: (v.capacity > 0).then_some(v.capacity),
                used_bytes: core.space_of(v.id)?.used,
                inodes: core.meta().usage(v.id)?.inodes,
                inode_limit: v.inode_limit(),
                exclusive_bytes: exclusive.get(&v.name).copied(),
                mounts: mounted.len() as u64 - subpath_mounts,
                subpath_mounts,
                ..VolumeStats::default()
            };
            if let Some(c) = self.counters.existing(&v.name) {
                stats.read_bytes = c.read_bytes.load(Ordering::Relaxed);
                stats.written_bytes = c.written_bytes.load(Ordering::Relaxed);
                stats.passthrough_opens = c.passthrough_opens.load(Ordering::Relaxed);
                stats.requests = c.requests();
            }
            volumes.push(stats);
        }
        volumes.sort_by_key(VolumeStats::name);
        let Start { unix: started_unix, seconds: start_seconds, recovered } = self.start;
        Ok(PoolStats {
            started_unix,
            start_seconds,
            recovered,
            commits: core.meta().commit_latency(),
            syncs: core.meta().sync_latency(),
            projected_mounts: mounts.iter().filter(|m| m.projected).count() as u64,
            volumes,
        })
    }

    /// Unmounts everything and lets `serve` return.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(limit) = self.stop_limit {
            exit_after(limit);
        }
        let mounts: Vec<_> = self.mounts().drain().collect();
        for (at, m) in mounts {
            self.forget(&m);
            if let Err(e) = m.session.umount_and_join(&at) {
                tracing::warn!(mountpoint = %at.display(), error = %e, "unmount on shutdown failed");
            }
        }
    }
}

/// `VOLUME@SNAP`, both names checked.
fn snapshot_name(snapshot: &SnapshotRef) -> Result<String, ApiError> {
    let full = snapshot.to_string();
    crate::pool::parse_snapshot_name(&full)?;
    Ok(full)
}

fn capacity_text(capacity: u64) -> String {
    match capacity {
        0 => "no capacity".to_string(),
        c => format!("a capacity of {c} bytes"),
    }
}

/// Runs the daemon until a shutdown request or SIGTERM/SIGINT.
pub fn serve(
    pool_dir: &Path,
    socket: Option<&Path>,
    metrics_addr: Option<&str>,
    stop_limit: Duration,
) -> anyhow::Result<()> {
    forbid_core_dumps()?;
    keep_request_buffers_lazy();
    let signals = watch_signals()?;
    let started = std::time::SystemTime::now();
    let pool = Pool::open(pool_dir, crate::pool::OpenMode::CreateIfMissing)?;
    let start_seconds = started.elapsed().unwrap_or_default().as_secs_f64();
    let started_unix = started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let recovered = pool.recovered();
    let pool_dir = pool.dir().to_path_buf();
    let socket = socket.map(Path::to_path_buf).unwrap_or_else(|| pool_dir.join(DEFAULT_SOCKET));
    let record = pool_dir.join(SOCKET_RECORD);
    // Only this daemon (it holds the pool's lock) can be behind a socket left over here.
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(&record, socket.as_os_str().as_encoded_bytes())?;
    let mut service = Service::new(pool, true);
    service.start = Start { unix: started_unix, seconds: start_seconds, recovered };
    service.stop_limit = Some(stop_limit);
    service.sessions = Some(start_workers()?);
    let service = Arc::new(service);
    if let Some(addr) = metrics_addr {
        let bound = crate::metrics::serve(addr, service.clone())?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    }
    let wake = AcceptWaker(Arc::new(listener.try_clone()?.into()));
    stop_on_signal(signals, service.clone(), wake.clone());
    tracing::info!(pool = %pool_dir.display(), socket = %socket.display(), pid = std::process::id(), "serving");
    for stream in listener.incoming() {
        if service.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (service, wake) = (service.clone(), wake.clone());
        std::thread::spawn(move || {
            if answer(&service, stream) {
                wake.wake();
            }
        });
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&record);
    tracing::info!(pool = %pool_dir.display(), "stopped");
    Ok(())
}

/// Answers one connection; returns whether it asked the daemon to stop.
fn answer(service: &Service, stream: UnixStream) -> bool {
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return false;
    }
    let (response, stop) = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let stop = request == Request::Shutdown;
            // Debug of a request never shows a spec's text (it may hold secrets).
            tracing::debug!(?request, "control request");
            match service.handle(request) {
                Ok(v) => (Response::Ok(v), stop),
                Err(e) => (Response::Error(e), false),
            }
        }
        Err(e) => (Response::Error(ApiError::invalid(format!("malformed request: {e}"))), false),
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialise");
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
    stop
}

/// The daemon holds secrets of projected trees in memory: a crash must not write them to a core
/// file (nor may another process read its memory through /proc or ptrace).
fn forbid_core_dumps() -> std::io::Result<()> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Every worker thread of a mount holds a request buffer the size of the largest write (16 MiB).
/// glibc raises its mmap threshold once such a buffer is freed (the handshake's is), and the
/// next buffers then come zeroed from the heap: all their pages touched, ~30 MiB resident per
/// idle mount and kept after unmount. A fixed threshold (which also fixes the trim threshold)
/// keeps each buffer a fresh mapping holding only the pages requests filled, and unmapped with
/// its mount.
fn keep_request_buffers_lazy() {
    const MMAP_THRESHOLD: libc::c_int = 4 << 20;
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!("cannot set the allocator's mmap threshold: idle mounts will hold more memory");
    }
}

/// SIGTERM and SIGINT stop the daemon in order: every mount is unmounted first. Watching
/// starts before the pool does, so no signal finds the daemon without its handler.
fn watch_signals() -> std::io::Result<Signals> {
    Signals::new([SIGTERM, SIGINT])
}

fn stop_on_signal(mut signals: Signals, service: Arc<Service>, wake: AcceptWaker) {
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "stopping");
            service.stop();
            wake.wake();
        }
    });
}

/// The workers serving every mount: four per CPU, at least eight (requests also wait on
/// other mounts' invalidations), one connection holding all but two, so one busy mount leaves
/// workers for the others; up to 256 while requests wait on the disk.
fn start_workers() -> std::io::Result<Arc<Sessions>> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = (4 * cpus).max(8);
    Sessions::start(workers, 256, workers - 2, (1 << 20) + 4096)
}

/// A stop unmounts every mount and closes the pool; both wait for I/O, and I/O on a disk that
/// stopped answering never ends. Past `limit` the daemon exits without them: what it
/// acknowledged is already durable, and the next start recovers the pool.
fn exit_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(limit_seconds = limit.as_secs(), "stopping took longer than the limit: exiting now");
        std::process::exit(1);
    });
}

/// Ends the accept loop once the daemon is stopping: shutting the listening socket down makes
/// `accept` return at once, whether or not its path still exists (a connection to the path
/// would not reach it once the file is gone). It holds a duplicate of the listener's
/// descriptor: shutting that down shuts the one socket both name.
#[derive(Clone)]
struct AcceptWaker(Arc<std::os::fd::OwnedFd>);

impl AcceptWaker {
    fn wake(&self) {
        let _ = rustix::net::shutdown(&*self.0, rustix::net::Shutdown::Both);
    }
}
