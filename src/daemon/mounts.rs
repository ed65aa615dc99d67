//! The daemon's mount table: every FUSE session it serves (volumes, snapshots, subPath
//! mounts, projected trees) by mountpoint, mounting and unmounting them, and the claims that
//! let many mounts and unmounts run at once without two on one mountpoint.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use volfs_api::{ApiError, MountInfo};

use super::Service;
use crate::fuse::coherence::Change;
use crate::fuse::projected::{ProjectedFs, ProjectedUpdater};
use crate::fuse::session::Connection;
use crate::fuse::{MountOptions, VolumeFs};
use crate::meta::{Kind, VolumeId};
use crate::projected::Projection;

/// What a mount serves.
pub(super) enum Served {
    /// A volume; `session` is the mount's id among the volume's mounts in `Coherence`.
    Volume {
        name: String,
        id: VolumeId,
        session: u64,
    },
    Projected(ProjectedUpdater),
}

/// A mountpoint taken for one mount or unmount (see `Service::claim`).
pub(super) struct Claim<'a> {
    service: &'a Service,
    at: PathBuf,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.service.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.at);
    }
}

pub(super) struct Mounted {
    pub(super) served: Served,
    /// The directory shown, for a subPath mount; empty for the whole volume or tree.
    pub(super) subpath: String,
    pub(super) read_only: bool,
    pub(super) session: Session,
}

/// A mount's kernel connection, served by the daemon's `Sessions`.
pub(super) struct Session(Arc<Connection>);

/// How long a connection may take to end once its mount is gone.
const END_WAIT: Duration = Duration::from_secs(30);

impl Session {
    fn is_finished(&self) -> bool {
        self.0.is_ended()
    }

    /// Waits for the connection to end once its mount is gone.
    fn join(self) -> io::Result<()> {
        match self.0.wait_ended(END_WAIT) {
            true => Ok(()),
            false => Err(io::Error::other("the connection did not end")),
        }
    }

    /// Unmounts `at` (detached if busy) and waits for the connection to end.
    pub(super) fn umount_and_join(self, at: &Path) -> io::Result<()> {
        use rustix::mount::{unmount, UnmountFlags};
        unmount(at, UnmountFlags::empty()).or_else(|_| unmount(at, UnmountFlags::DETACH))?;
        self.join()
    }
}

impl Mounted {
    /// The volume mounted; empty for a projected tree.
    pub(super) fn volume(&self) -> &str {
        match &self.served {
            Served::Volume { name, .. } => name,
            Served::Projected(_) => "",
        }
    }

    pub(super) fn info(&self, mountpoint: &Path) -> MountInfo {
        MountInfo {
            volume: self.volume().to_string(),
            projected: matches!(self.served, Served::Projected(_)),
            subpath: self.subpath.clone(),
            mountpoint: mountpoint.to_path_buf(),
            read_only: self.read_only,
        }
    }

    pub(super) fn describe(&self) -> String {
        match &self.served {
            Served::Volume { name, .. } => format!("volume {name}"),
            Served::Projected(_) => "a projected tree".to_string(),
        }
    }
}

impl Service {
    pub(super) fn mounts(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Mounted>> {
        let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        // A mount someone took down with fusermount3 or umount ends its session by itself.
        mounts.retain(|_, m| {
            let alive = !m.session.is_finished();
            if !alive {
                self.forget(m);
            }
            alive
        });
        mounts
    }

    /// Takes `at` for a mount or unmount of `volume`; the claim ends when dropped. Called with
    /// the mount table locked (lock order: mounts, then in_flight).
    pub(super) fn claim(&self, at: &Path, volume: &str) -> Result<Claim<'_>, ApiError> {
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
    pub(super) fn mounted_at(&self, mounts: &HashMap<PathBuf, Mounted>, volume: &str) -> Option<PathBuf> {
        let busy = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let settled = mounts.iter().find(|(_, m)| m.volume() == volume).map(|(at, _)| at.clone());
        settled.or_else(|| busy.iter().find(|(_, v)| *v == volume).map(|(at, _)| at.clone()))
    }

    /// Drops what the daemon keeps about a mount besides its session.
    pub(super) fn forget(&self, m: &Mounted) {
        if let Served::Volume { id, session, .. } = &m.served {
            self.coherence.unregister(*id, *session);
        }
    }

    /// The mountpoint, made absolute, if nothing is mounted there yet.
    pub(super) fn free_mountpoint(&self, mounts: &HashMap<PathBuf, Mounted>, at: &Path) -> Result<(), ApiError> {
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

    /// Tells the volume's mounts that the directories on `subpath` may have new entries: made
    /// here, not through a mount, they would otherwise stay unseen in cached listings.
    fn publish_path(&self, volume: &crate::meta::Volume, subpath: &str) {
        let core = self.pool.core();
        let mut changes = Vec::new();
        let mut dir = volume.root;
        for name in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
            changes.push(Change::Entry(dir, name.as_bytes().to_vec()));
            changes.push(Change::Attr(dir));
            match core.lookup(dir, name.as_bytes()) {
                Ok(attr) if attr.kind == Kind::Dir => dir = attr.ino,
                _ => break,
            }
        }
        // Session 0 is none of the mounts: every mount of the volume hears it.
        self.coherence.publish(volume.id, 0, || changes);
    }

    pub(super) fn mount_list(&self) -> Vec<MountInfo> {
        let mut list: Vec<_> = self.mounts().iter().map(|(at, m)| m.info(at)).collect();
        list.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        list
    }

    pub(super) fn mount(
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
        if create {
            self.publish_path(&volume, subpath);
        }
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
        let sessions = self.sessions.as_ref().ok_or_else(|| ApiError::invalid("mounting needs the daemon"))?;
        let connection = fs
            .mount(sessions, &at)
            .map_err(|e| ApiError::internal(format!("mounting {} at {}: {e}", volume.name, at.display())))?;
        self.coherence.register(volume.id, session_id, root, connection.clone());
        let session = Session(connection);
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

    pub(super) fn umount(&self, mountpoint: &Path) -> Result<Value, ApiError> {
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
    pub(super) fn project_mount(
        &self,
        spec: &str,
        mountpoint: &Path,
        subpath: Option<&str>,
    ) -> Result<Value, ApiError> {
        if !self.daemon {
            return Err(ApiError::invalid("mounting needs the daemon"));
        }
        let projection = Projection::from_yaml(spec).map_err(|e| ApiError::invalid(e.to_string()))?;
        let at = std::fs::canonicalize(mountpoint)
            .map_err(|_| ApiError::not_found(format!("mountpoint {} does not exist", mountpoint.display())))?;
        let mut mounts = self.mounts();
        self.free_mountpoint(&mounts, &at)?;
        let (fs, updater) = ProjectedFs::new(projection);
        let sessions = self.sessions.as_ref().ok_or_else(|| ApiError::invalid("mounting needs the daemon"))?;
        let session = Session(
            fs.mount(sessions, &at, subpath)
                .map_err(|e| ApiError::internal(format!("mounting the projected tree at {}: {e}", at.display())))?,
        );
        let generation = updater.generation();
        tracing::info!(mountpoint = %at.display(), generation, "projected tree mounted");
        let subpath = subpath.unwrap_or("").trim_matches('/').to_string();
        let mounted = Mounted { served: Served::Projected(updater), subpath, read_only: true, session };
        mounts.insert(at.clone(), mounted);
        Ok(json!({ "mountpoint": at, "generation": generation }))
    }

    /// Swaps in a new generation of the projected tree at `mountpoint`; a spec that does not
    /// build changes nothing.
    pub(super) fn project_update(&self, mountpoint: &Path, spec: &str) -> Result<Value, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount_path(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
