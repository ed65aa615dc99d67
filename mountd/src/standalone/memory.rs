//! emptyDir `medium: Memory`: volumes of a second pool kept on a tmpfs that mountd mounts in
//! its state dir (`STATE_DIR/memory`, 0700, `noswap` where the kernel has it), served by a data
//! plane of its own. Its volumes, capacities (`sizeLimit` is a hard limit) and subPaths
//! work as any other's, and their bytes are in memory only: gone with the node's memory.

use std::path::{Path, PathBuf};

use volfs_api::Client;

use crate::dataplane::DataPlane;

const TMPFS_MAGIC: i64 = 0x0102_1994;

pub struct MemoryPool {
    dir: PathBuf,
    data: DataPlane,
    /// The pid of its data plane last seen (0: never started).
    pid: std::sync::atomic::AtomicU32,
    /// Whether a data plane may be started (a service manager may run the disk one only).
    startable: bool,
}

impl MemoryPool {
    pub fn new(state_dir: &Path, volfs: Option<PathBuf>) -> MemoryPool {
        let dir = state_dir.join("memory");
        let startable = volfs.is_some();
        let data = DataPlane::new(dir.join("pool"), None, volfs, state_dir.join("volfs-memory.log"));
        MemoryPool { dir, data, startable, pid: Default::default() }
    }

    /// The memory pool's data plane, its tmpfs mounted and the daemon started when needed.
    pub async fn ready(&self) -> Result<&Client, String> {
        if !self.startable {
            return Err(
                "emptyDir medium Memory needs a data plane mountd may start (it runs with --external-data-plane)"
                    .into(),
            );
        }
        self.mount_tmpfs()?;
        let pong = self.data.ensure_running().await.map_err(|e| format!("the memory pool's data plane: {e}"))?;
        self.pid.store(pong.pid, std::sync::atomic::Ordering::SeqCst);
        Ok(self.data.client())
    }

    /// Whether the data plane, once started, is another process now (it died and was
    /// started again here): its mounts must be made again.
    pub async fn restarted(&self) -> bool {
        let seen = self.pid.load(std::sync::atomic::Ordering::SeqCst);
        if seen == 0 {
            return false;
        }
        if self.data.client().ping().await.is_ok_and(|p| p.pid == seen) {
            return false;
        }
        self.ready().await.is_ok()
    }

    /// The memory pool's data plane if it runs, for teardown (nothing to undo otherwise).
    pub async fn running(&self) -> Option<&Client> {
        self.data.client().ping().await.ok().map(|_| self.data.client())
    }

    fn mount_tmpfs(&self) -> Result<(), String> {
        if is_tmpfs(&self.dir) {
            return Ok(());
        }
        crate::serve::private_dir(&self.dir).map_err(|e| e.to_string())?;
        use rustix::mount::{mount, MountFlags};
        let tmpfs = |options: &std::ffi::CStr| {
            mount(c"tmpfs", &self.dir, c"tmpfs", MountFlags::NOSUID | MountFlags::NODEV, options)
        };
        // noswap (Linux 6.4+): memory volumes never reach a swap device.
        if let Err(e) = tmpfs(c"mode=0700,noswap").or_else(|_| tmpfs(c"mode=0700")) {
            return Err(format!("mounting a tmpfs at {}: {}", self.dir.display(), std::io::Error::from(e)));
        }
        tracing::info!(dir = %self.dir.display(), "mounted the memory pool's tmpfs");
        Ok(())
    }
}

pub fn is_tmpfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type == TMPFS_MAGIC)
}
