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

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use serde_json::{json, Value};
use volfs_api::{
    ApiError, MountInfo, PoolStats, Request, Response, SnapshotRef, VolumeInfo, VolumeSource, VolumeStats,
    DEFAULT_SOCKET, SOCKET_RECORD,
};

use crate::fuse::coherence::{Change, Coherence};
use crate::fuse::projected::{ProjectedFs, ProjectedUpdater};
use crate::fuse::{MountOptions, VolumeFs};
use crate::meta::{Kind, VolumeId};
use crate::names::VolumeName;
use crate::pool::{Pool, Source};
use crate::projected::Projection;
use crate::stats::Counters;

/// What a mount serves.
enum Served {
    /// A volume; `session` is the mount's id among the volume's mounts in `Coherence`.
    Volume {
        name: String,
        id: VolumeId,
        session: u64,
    },
    Projected(ProjectedUpdater),
}

/// A mountpoint taken for one mount or unmount (see `Service::claim`).
struct Claim<'a> {
    service: &'a Service,
    at: PathBuf,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.service.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.at);
    }
}

struct Mounted {
    served: Served,
    /// The directory shown, for a subPath mount; empty for the whole volume or tree.
    subpath: String,
    read_only: bool,
    session: fuser::BackgroundSession,
}

impl Mounted {
    /// The volume mounted; empty for a projected tree.
    fn volume(&self) -> &str {
        match &self.served {
            Served::Volume { name, .. } => name,
            Served::Projected(_) => "",
        }
    }

    fn info(&self, mountpoint: &Path) -> MountInfo {
        MountInfo {
            volume: self.volume().to_string(),
            projected: matches!(self.served, Served::Projected(_)),
            subpath: self.subpath.clone(),
            mountpoint: mountpoint.to_path_buf(),
            read_only: self.read_only,
        }
    }

    fn describe(&self) -> String {
        match &self.served {
            Served::Volume { name, .. } => format!("volume {name}"),
            Served::Projected(_) => "a projected tree".to_string(),
        }
    }
}

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
    coherence: Arc<Coherence>,
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
            coherence: Arc::new(Coherence::new()),
            next_session: AtomicU64::new(1),
            counters: Counters::default(),
            start: Start::default(),
        }
    }

    fn mounts(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Mounted>> {
        let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        // A mount someone took down with fusermount3 or umount ends its session by itself.
        mounts.retain(|_, m| {
            let alive = !m.session.guard.is_finished();
            if !alive {
                self.forget(m);
            }
            alive
        });
        mounts
    }

    /// Takes `at` for a mount or unmount of `volume`; the claim ends when dropped. Called with
    /// the mount table locked (lock order: mounts, then in_flight).
    fn claim(&self, at: &Path, volume: &str) -> Result<Claim<'_>, ApiError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = in_flight.get(at) {
            let what = if other.is_empty() { "a projected tree".to_string() } else { format!("volume {other}") };
            return Err(ApiError::busy(format!(
                "mountpoint {} is busy: {what} is being mounted or unmounted there",
                at.display()
            )));
        }
        in_flight.insert(at.to_path_buf(), volume.to_string());
        Ok(Claim { service: self, at: at.to_path_buf() })
    }

    /// Where `volume` (or snapshot `VOLUME@SNAP`) is mounted, or being mounted or unmounted.
    fn mounted_at(&self, mounts: &HashMap<PathBuf, Mounted>, volume: &str) -> Option<PathBuf> {
        let busy = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let settled = mounts.iter().find(|(_, m)| m.volume() == volume).map(|(at, _)| at.clone());
        settled.or_else(|| busy.iter().find(|(_, v)| *v == volume).map(|(at, _)| at.clone()))
    }

    /// Drops what the daemon keeps about a mount besides its session.
    fn forget(&self, m: &Mounted) {
        if let Served::Volume { id, session, .. } = &m.served {
            self.coherence.unregister(*id, *session);
        }
    }

    /// The mountpoint, made absolute, if nothing is mounted there yet.
    fn free_mountpoint(&self, mounts: &HashMap<PathBuf, Mounted>, at: &Path) -> Result<(), ApiError> {
        if let Some(m) = mounts.get(at) {
            return Err(ApiError::exists(format!(
                "mountpoint {} is busy: {} is mounted there",
                at.display(),
                m.describe()
            )));
        }
        if self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains_key(at) {
            return Err(ApiError::busy(format!("mountpoint {} is busy: a mount there is under way", at.display())));
        }
        if is_mountpoint(at) {
            return Err(ApiError::busy(format!("mountpoint {} is busy: something is mounted there", at.display())));
        }
        Ok(())
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
                let options = MountOptions { read_only, passthrough, ..MountOptions::default() };
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

    fn mount_list(&self) -> Vec<MountInfo> {
        let mut list: Vec<_> = self.mounts().iter().map(|(at, m)| m.info(at)).collect();
        list.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        list
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

    fn mount(
        &self,
        volume: &str,
        subpath: &str,
        create: bool,
        mountpoint: &Path,
        options: MountOptions,
    ) -> Result<MountInfo, ApiError> {
        if !self.daemon {
            return Err(ApiError::invalid("mounting needs the daemon"));
        }
        let volume = self.pool.volume(volume)?;
        let at = check_mountpoint(mountpoint)?;
        // As shown and compared; the resolver sees the path as given (it refuses absolute ones).
        let shown = subpath.trim_matches('/');
        let claim = {
            let mounts = self.mounts();
            if let Some(m) = mounts.get(&at) {
                // The same mount asked for again is the mount that is there.
                if m.volume() == volume.name && m.subpath == shown && m.read_only == options.read_only {
                    return Ok(m.info(&at));
                }
            }
            self.free_mountpoint(&mounts, &at)?;
            self.claim(&at, &volume.name)?
        };
        let in_volume = |e: crate::error::Error| ApiError::new(e.api_kind(), format!("volume {}: {}", volume.name, e));
        let root = self.pool.core().resolve_subpath(volume.root, subpath, create).map_err(in_volume)?;
        // A mount of a file goes on a regular file, of a directory on a directory.
        let of_file = self.pool.core().getattr(root).map_err(in_volume)?.kind == Kind::File;
        if of_file != at.is_file() {
            let (shows, needs) = if of_file { ("a file", "a regular file") } else { ("a directory", "a directory") };
            return Err(ApiError::invalid(format!(
                "mountpoint {} is not {needs}: volume {} at subpath {shown:?} is {shows}",
                at.display(),
                volume.name
            )));
        }
        let read_only = options.read_only;
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let counters = self.counters.volume(&volume.name);
        let fs = VolumeFs::new(
            self.pool.clone(),
            volume.clone(),
            root,
            options,
            self.coherence.clone(),
            session_id,
            counters,
        );
        let session = fs
            .mount(&at)
            .map_err(|e| ApiError::internal(format!("mounting {} at {}: {e}", volume.name, at.display())))?;
        self.coherence.register(volume.id, session_id, root, session.notifier());
        if self.coherence.is_shared(volume.id) {
            // The other mounts may hold file sizes and times for long; from now on writes can
            // come from here, so they must ask again.
            let mut files = Vec::new();
            let walked = self.pool.walk(volume.root, |_, _, ino, inode| {
                if inode.kind == Kind::File {
                    files.push(Change::Data(ino));
                }
            });
            if let Err(e) = walked {
                tracing::warn!(volume = %volume.name, error = %e, "could not list files to invalidate");
            }
            self.coherence.publish(volume.id, session_id, || files);
        }
        tracing::info!(volume = %volume.name, subpath, mountpoint = %at.display(), read_only, "mounted");
        let served = Served::Volume { name: volume.name.clone(), id: volume.id, session: session_id };
        let mounted = Mounted { served, subpath: shown.to_string(), read_only, session };
        let info = mounted.info(&at);
        self.mounts().insert(at, mounted);
        drop(claim);
        Ok(info)
    }

    fn umount(&self, mountpoint: &Path) -> Result<Value, ApiError> {
        let at = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let claim = {
            let mounts = self.mounts();
            let Some(mounted) = mounts.get(&at) else {
                return Err(ApiError::not_found(format!("no volfs mount at {}", mountpoint.display())));
            };
            self.claim(&at, mounted.volume())?
        };
        // Unmount before letting go of the session: a busy mount stays served and listed.
        if let Err(e) = rustix::mount::unmount(&at, rustix::mount::UnmountFlags::empty()) {
            let kind = if e == rustix::io::Errno::BUSY { ApiError::busy } else { ApiError::internal };
            return Err(kind(format!("unmounting {}: {}", at.display(), std::io::Error::from(e))));
        }
        let mounted = self.mounts().remove(&at);
        drop(claim);
        // Without an entry, the table already saw the session end and forgot it.
        if let Some(mounted) = mounted {
            self.forget(&mounted);
            let what = mounted.describe();
            // The kernel has ended the connection; the session thread sees that and returns.
            mounted
                .session
                .join()
                .map_err(|e| ApiError::internal(format!("ending the session of {}: {e}", at.display())))?;
            tracing::info!(mount = %what, mountpoint = %at.display(), "unmounted");
        }
        Ok(json!({ "unmounted": at }))
    }

    /// Mounts a read-only tree projected from `spec` (the kubelet's configMap/secret layout).
    fn project_mount(&self, spec: &str, mountpoint: &Path, subpath: Option<&str>) -> Result<Value, ApiError> {
        if !self.daemon {
            return Err(ApiError::invalid("mounting needs the daemon"));
        }
        let projection = Projection::from_yaml(spec).map_err(|e| ApiError::invalid(e.to_string()))?;
        let at = std::fs::canonicalize(mountpoint)
            .map_err(|_| ApiError::not_found(format!("mountpoint {} does not exist", mountpoint.display())))?;
        let mut mounts = self.mounts();
        self.free_mountpoint(&mounts, &at)?;
        let (fs, updater) = ProjectedFs::new(projection);
        let session = fs
            .mount(&at, subpath)
            .map_err(|e| ApiError::internal(format!("mounting the projected tree at {}: {e}", at.display())))?;
        let generation = updater.generation();
        tracing::info!(mountpoint = %at.display(), generation, "projected tree mounted");
        let subpath = subpath.unwrap_or("").trim_matches('/').to_string();
        let mounted = Mounted { served: Served::Projected(updater), subpath, read_only: true, session };
        mounts.insert(at.clone(), mounted);
        Ok(json!({ "mountpoint": at, "generation": generation }))
    }

    /// Swaps in a new generation of the projected tree at `mountpoint`; a spec that does not
    /// build changes nothing.
    fn project_update(&self, mountpoint: &Path, spec: &str) -> Result<Value, ApiError> {
        let at = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let updater = match self.mounts().get(&at).map(|m| &m.served) {
            Some(Served::Projected(updater)) => updater.clone(),
            _ => return Err(ApiError::not_found(format!("no projected tree is mounted at {}", mountpoint.display()))),
        };
        let projection = Projection::from_yaml(spec).map_err(|e| ApiError::invalid(e.to_string()))?;
        let update = updater.update(projection);
        tracing::info!(mountpoint = %at.display(), generation = update.generation, changed = update.changed, "projected tree updated");
        Ok(json!({ "mountpoint": at, "generation": update.generation, "changed": update.changed }))
    }

    /// Unmounts everything and lets `serve` return.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mounts: Vec<_> = self.mounts().drain().collect();
        for (at, m) in mounts {
            self.forget(&m);
            if let Err(e) = m.session.umount_and_join() {
                tracing::warn!(mountpoint = %at.display(), error = %e, "unmount on shutdown failed");
            }
        }
    }
}

/// An existing directory or regular file (for a subPath mount of one file) to mount on.
fn check_mountpoint(path: &Path) -> Result<PathBuf, ApiError> {
    let at = std::fs::canonicalize(path)
        .map_err(|_| ApiError::not_found(format!("mountpoint {} does not exist", path.display())))?;
    if !at.is_dir() && !at.is_file() {
        return Err(ApiError::invalid(format!("mountpoint {} is not a directory", path.display())));
    }
    Ok(at)
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

/// Whether something is mounted exactly at `path`.
fn is_mountpoint(path: &Path) -> bool {
    mount_table().iter().any(|m| m == path)
}

/// Every mountpoint in the kernel's mount table, as this process sees it.
pub fn mount_table() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(unescape_mount_path(m))).collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the daemon until a shutdown request or SIGTERM/SIGINT.
pub fn serve(pool_dir: &Path, socket: Option<&Path>, metrics_addr: Option<&str>) -> anyhow::Result<()> {
    forbid_core_dumps()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount_path(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
