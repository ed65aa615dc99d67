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

use serde::Serialize;
use serde_json::{json, Value};

use crate::control::{Request, Response, VolumeSource, DEFAULT_SOCKET, SOCKET_RECORD};
use crate::fuse::coherence::{Change, Coherence};
use crate::fuse::projected::{ProjectedFs, ProjectedUpdater};
use crate::fuse::{MountOptions, VolumeFs};
use crate::meta::{Kind, VolumeId};
use crate::names::VolumeName;
use crate::pool::{Pool, Source};
use crate::projected::Projection;

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

struct Mounted {
    served: Served,
    /// The directory shown, for a subPath view; empty for the whole volume or tree.
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

    fn describe(&self) -> String {
        match &self.served {
            Served::Volume { name, .. } => format!("volume {name}"),
            Served::Projected(_) => "a projected tree".to_string(),
        }
    }
}

#[derive(Serialize)]
struct MountInfo {
    volume: String,
    projected: bool,
    subpath: String,
    mountpoint: PathBuf,
    read_only: bool,
}

/// Answers control requests against one open pool.
pub struct Service {
    pool: Arc<Pool>,
    mounts: Mutex<HashMap<PathBuf, Mounted>>,
    /// Whether this process is the daemon (mounts are possible, fsck runs online).
    daemon: bool,
    stopping: AtomicBool,
    coherence: Arc<Coherence>,
    next_session: AtomicU64,
}

impl Service {
    pub fn new(pool: Pool, daemon: bool) -> Self {
        Service {
            pool: Arc::new(pool),
            mounts: Mutex::new(HashMap::new()),
            daemon,
            stopping: AtomicBool::new(false),
            coherence: Arc::new(Coherence::new()),
            next_session: AtomicU64::new(1),
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

    /// Drops what the daemon keeps about a mount besides its session.
    fn forget(&self, m: &Mounted) {
        if let Served::Volume { id, session, .. } = &m.served {
            self.coherence.unregister(*id, *session);
        }
    }

    /// The mountpoint, made absolute, if nothing is mounted there yet.
    fn free_mountpoint(&self, mounts: &HashMap<PathBuf, Mounted>, at: &Path) -> Result<(), String> {
        if let Some(m) = mounts.get(at) {
            return Err(format!("mountpoint {} is busy: {} is mounted there", at.display(), m.describe()));
        }
        if is_mountpoint(at) {
            return Err(format!("mountpoint {} is busy: something is mounted there", at.display()));
        }
        Ok(())
    }

    pub fn handle(&self, request: Request) -> Result<Value, String> {
        let err = |e: crate::Error| e.to_string();
        match request {
            Request::Ping => Ok(json!({ "pid": std::process::id(), "pool": self.pool.dir() })),
            Request::CreateVolume { name, capacity, from } => {
                let name = VolumeName::parse(&name)?;
                let source = match from {
                    None => Source::Nothing,
                    Some(VolumeSource::Volume(v)) => Source::Volume(v),
                    Some(VolumeSource::Snapshot(s)) => Source::Snapshot(s),
                };
                let volume = self.pool.create_volume_from(&name, &source, capacity).map_err(err)?;
                Ok(json!(self.pool.volume_info(&volume).map_err(err)?))
            }
            Request::CreateSnapshot { volume, name } => {
                let (volume, name) = (VolumeName::parse(&volume)?, VolumeName::parse(&name)?);
                let snapshot = self.pool.create_snapshot(&volume, &name).map_err(err)?;
                Ok(json!(self.pool.snapshot_info(&snapshot, 0).map_err(err)?))
            }
            Request::ListSnapshots { volume } => Ok(json!(self.pool.snapshots(volume.as_deref()).map_err(err)?)),
            Request::DeleteSnapshot { name } => {
                if let Some((at, _)) = self.mounts().iter().find(|(_, m)| m.volume() == name) {
                    return Err(format!("snapshot {name} is mounted at {}; unmount it first", at.display()));
                }
                self.pool.delete_snapshot(&name).map_err(err)?;
                Ok(json!({ "deleted": name }))
            }
            Request::ListVolumes => Ok(json!(self.pool.volumes().map_err(err)?)),
            Request::InspectVolume { name } => {
                let volume = self.pool.volume(&name).map_err(err)?;
                let mut info = json!(self.pool.volume_info(&volume).map_err(err)?);
                let mounts: Vec<_> = self.mount_list().into_iter().filter(|m| m.volume == name).collect();
                info["mounts"] = json!(mounts);
                Ok(info)
            }
            Request::DeleteVolume { name } => {
                let mounts = self.mounts();
                if let Some((at, _)) = mounts.iter().find(|(_, m)| m.volume() == name) {
                    return Err(format!("volume {name} is mounted at {}; unmount it first", at.display()));
                }
                self.pool.delete_volume(&name).map_err(err)?;
                Ok(json!({ "deleted": name }))
            }
            Request::ResizeVolume { name, capacity } => {
                let volume = self.pool.resize_volume(&name, capacity).map_err(err)?;
                Ok(json!(self.pool.volume_info(&volume).map_err(err)?))
            }
            Request::Mount { volume, mountpoint, read_only, passthrough, subpath, create } => {
                // A snapshot is read-only whatever the mount asks.
                let read_only = read_only || volume.contains('@');
                let options = MountOptions { read_only, passthrough, ..MountOptions::default() };
                self.mount(&volume, subpath.as_deref().unwrap_or(""), create, &mountpoint, options)
            }
            Request::Umount { mountpoint } => self.umount(&mountpoint),
            Request::ProjectMount { spec, mountpoint, subpath } => {
                self.project_mount(&spec.0, &mountpoint, subpath.as_deref())
            }
            Request::ProjectUpdate { mountpoint, spec } => self.project_update(&mountpoint, &spec.0),
            Request::ListMounts => Ok(json!(self.mount_list())),
            Request::Fsck { repair } => {
                let report = crate::fsck::check(&self.pool, repair, !self.daemon).map_err(err)?;
                Ok(json!(report))
            }
            Request::Shutdown => {
                self.stop();
                Ok(json!({ "stopped": true }))
            }
        }
    }

    fn mount_list(&self) -> Vec<MountInfo> {
        let mut list: Vec<_> = self
            .mounts()
            .iter()
            .map(|(at, m)| MountInfo {
                volume: m.volume().to_string(),
                projected: matches!(m.served, Served::Projected(_)),
                subpath: m.subpath.clone(),
                mountpoint: at.clone(),
                read_only: m.read_only,
            })
            .collect();
        list.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        list
    }

    fn mount(
        &self,
        volume: &str,
        subpath: &str,
        create: bool,
        mountpoint: &Path,
        options: MountOptions,
    ) -> Result<Value, String> {
        if !self.daemon {
            return Err("mounting needs the daemon".into());
        }
        let volume = self.pool.volume(volume).map_err(|e| e.to_string())?;
        let at = check_mountpoint(mountpoint)?;
        let root = self
            .pool
            .core()
            .resolve_subpath(volume.root, subpath, create)
            .map_err(|e| format!("volume {}: {}", volume.name, e))?;
        let mut mounts = self.mounts();
        self.free_mountpoint(&mounts, &at)?;
        let read_only = options.read_only;
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let fs = VolumeFs::new(self.pool.clone(), volume.clone(), root, options, self.coherence.clone(), session_id);
        let session = fs.mount(&at).map_err(|e| format!("mounting {} at {}: {e}", volume.name, at.display()))?;
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
        let subpath = subpath.trim_matches('/').to_string();
        let served = Served::Volume { name: volume.name.clone(), id: volume.id, session: session_id };
        let mounted = Mounted { served, subpath: subpath.clone(), read_only, session };
        mounts.insert(at.clone(), mounted);
        Ok(json!({ "volume": volume.name, "subpath": subpath, "mountpoint": at, "read_only": read_only }))
    }

    fn umount(&self, mountpoint: &Path) -> Result<Value, String> {
        let at = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let mut mounts = self.mounts();
        if !mounts.contains_key(&at) {
            return Err(format!("no volfs mount at {}", mountpoint.display()));
        }
        // Unmount before letting go of the session: a busy mount stays served and listed.
        let path = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid C string; plain syscall.
        if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("unmounting {}: {e}", at.display()));
        }
        let mounted = mounts.remove(&at).expect("checked above");
        drop(mounts);
        self.forget(&mounted);
        let what = mounted.describe();
        // The kernel has ended the connection; the session thread sees that and returns.
        mounted.session.join().map_err(|e| format!("ending the session of {}: {e}", at.display()))?;
        tracing::info!(mount = %what, mountpoint = %at.display(), "unmounted");
        Ok(json!({ "unmounted": at }))
    }

    /// Mounts a read-only tree projected from `spec` (the kubelet's configMap/secret layout).
    fn project_mount(&self, spec: &str, mountpoint: &Path, subpath: Option<&str>) -> Result<Value, String> {
        if !self.daemon {
            return Err("mounting needs the daemon".into());
        }
        let projection = Projection::from_yaml(spec).map_err(|e| e.to_string())?;
        let at = std::fs::canonicalize(mountpoint)
            .map_err(|_| format!("mountpoint {} does not exist", mountpoint.display()))?;
        let mut mounts = self.mounts();
        self.free_mountpoint(&mounts, &at)?;
        let (fs, updater) = ProjectedFs::new(projection);
        let session =
            fs.mount(&at, subpath).map_err(|e| format!("mounting the projected tree at {}: {e}", at.display()))?;
        let generation = updater.generation();
        tracing::info!(mountpoint = %at.display(), generation, "projected tree mounted");
        let subpath = subpath.unwrap_or("").trim_matches('/').to_string();
        let mounted = Mounted { served: Served::Projected(updater), subpath, read_only: true, session };
        mounts.insert(at.clone(), mounted);
        Ok(json!({ "mountpoint": at, "generation": generation }))
    }

    /// Swaps in a new generation of the projected tree at `mountpoint`; a spec that does not
    /// build changes nothing.
    fn project_update(&self, mountpoint: &Path, spec: &str) -> Result<Value, String> {
        let at = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
        let updater = match self.mounts().get(&at).map(|m| &m.served) {
            Some(Served::Projected(updater)) => updater.clone(),
            _ => return Err(format!("no projected tree is mounted at {}", mountpoint.display())),
        };
        let projection = Projection::from_yaml(spec).map_err(|e| e.to_string())?;
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

fn check_mountpoint(path: &Path) -> Result<PathBuf, String> {
    let at = std::fs::canonicalize(path).map_err(|_| format!("mountpoint {} does not exist", path.display()))?;
    if !at.is_dir() {
        return Err(format!("mountpoint {} is not a directory", path.display()));
    }
    Ok(at)
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
pub fn serve(pool_dir: &Path, socket: Option<&Path>) -> anyhow::Result<()> {
    let signals = block_stop_signals();
    let pool = Pool::open(pool_dir, crate::pool::OpenMode::CreateIfMissing)?;
    let pool_dir = pool.dir().to_path_buf();
    let socket = socket.map(Path::to_path_buf).unwrap_or_else(|| pool_dir.join(DEFAULT_SOCKET));
    let record = pool_dir.join(SOCKET_RECORD);
    // Only this daemon (it holds the pool's lock) can be behind a socket left over here.
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(&record, socket.as_os_str().as_encoded_bytes())?;
    let service = Arc::new(Service::new(pool, true));
    watch_signals(signals, service.clone(), socket.clone());
    tracing::info!(pool = %pool_dir.display(), socket = %socket.display(), pid = std::process::id(), "serving");
    for stream in listener.incoming() {
        if service.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let service = service.clone();
        let wake = socket.clone();
        std::thread::spawn(move || {
            let stop = answer(&service, stream);
            if stop {
                // Wake the accept loop so it sees the flag.
                let _ = UnixStream::connect(&wake);
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
        Err(e) => (Response::Error(format!("malformed request: {e}")), false),
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialise");
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
    stop
}

/// Blocks SIGTERM and SIGINT in this thread and every thread started after it, so that only
/// `watch_signals` receives them. Must run before the pool starts its threads.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set, then a mask change of this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// SIGTERM and SIGINT stop the daemon in order: every mount is unmounted first.
fn watch_signals(set: libc::sigset_t, service: Arc<Service>, socket: PathBuf) {
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: waits on a set of blocked signals.
        unsafe { libc::sigwait(&set, &mut sig) };
        tracing::info!(signal = sig, "stopping");
        service.stop();
        let _ = UnixStream::connect(&socket);
    });
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
