//! What the daemon counts as it serves: FUSE requests by operation, with their service time
//! and errors, and file bytes through the daemon, per volume or snapshot; metadata commits for
//! the pool (kept by `meta`). Counting is relaxed atomics on the request path (no lock, no allocation); readers
//! (`volfs stats`, `volfs top`, the Prometheus endpoint) take a snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use volfs_api::{Latency, OpStats, LATENCY_BOUNDS};

/// The FUSE operations the adapter serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Create,
    Ioctl,
    Fallocate,
    Lseek,
    CopyFileRange,
}

impl Op {
    pub const ALL: [Op; 33] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Statfs,
        Op::Setxattr,
        Op::Getxattr,
        Op::Listxattr,
        Op::Removexattr,
        Op::Create,
        Op::Ioctl,
        Op::Fallocate,
        Op::Lseek,
        Op::CopyFileRange,
    ];

    /// As logs, `volfs stats` and the metrics' `op` label name it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Setxattr => "setxattr",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Removexattr => "removexattr",
            Op::Create => "create",
            Op::Ioctl => "ioctl",
            Op::Fallocate => "fallocate",
            Op::Lseek => "lseek",
            Op::CopyFileRange => "copy_file_range",
        }
    }
}

/// A latency histogram over `LATENCY_BOUNDS`, counted without locks.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Latency {
        Latency {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The counters of one volume or snapshot, shared by all its mounts and kept across them.
pub struct VolumeCounters {
    /// `VOLUME` or `VOLUME@SNAP`, for the span of each request.
    volume: String,
    requests: [Histogram; Op::ALL.len()],
    /// Failed requests by (operation, errno); touched only on failure.
    errors: DashMap<(Op, i32), u64>,
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub passthrough_opens: AtomicU64,
}

impl VolumeCounters {
    pub fn new(volume: &str) -> Self {
        VolumeCounters {
            volume: volume.to_string(),
            requests: std::array::from_fn(|_| Histogram::default()),
            errors: DashMap::new(),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            passthrough_opens: AtomicU64::new(0),
        }
    }

    /// Starts timing one request, inside a span naming it and its volume; it counts when the
    /// returned guard drops.
    pub fn request(&self, op: Op) -> Request<'_> {
        let span = tracing::debug_span!("fuse", op = op.name(), volume = %self.volume).entered();
        Request { counters: self, op, start: Instant::now(), _span: span }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<OpStats> {
        let mut errors: BTreeMap<Op, BTreeMap<String, u64>> = BTreeMap::new();
        for e in self.errors.iter() {
            let ((op, errno), n) = (*e.key(), *e.value());
            *errors.entry(op).or_default().entry(errno_name(errno)).or_default() += n;
        }
        Op::ALL
            .iter()
            .zip(&self.requests)
            .map(|(op, h)| OpStats {
                op: op.name().to_string(),
                latency: h.snapshot(),
                errors: errors.remove(op).unwrap_or_default(),
            })
            .filter(|s| s.latency.count() > 0)
            .collect()
    }
}

/// One request being served.
pub struct Request<'a> {
    counters: &'a VolumeCounters,
    op: Op,
    start: Instant,
    _span: tracing::span::EnteredSpan,
}

impl Request<'_> {
    pub fn op(&self) -> Op {
        self.op
    }

    /// The request failed with `errno`.
    pub fn failed(&self, errno: i32) {
        *self.counters.errors.entry((self.op, errno)).or_default() += 1;
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        self.counters.requests[self.op as usize].observe(self.start.elapsed());
    }
}

/// Every volume's counters, by name (`VOLUME` or `VOLUME@SNAP`).
#[derive(Default)]
pub struct Counters {
    volumes: Mutex<std::collections::HashMap<String, Arc<VolumeCounters>>>,
}

impl Counters {
    /// The counters of `volume`, made on first use.
    pub fn volume(&self, volume: &str) -> Arc<VolumeCounters> {
        let mut volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        volumes.entry(volume.to_string()).or_insert_with(|| Arc::new(VolumeCounters::new(volume))).clone()
    }

    /// The counters of `volume` if it was ever mounted.
    pub fn existing(&self, volume: &str) -> Option<Arc<VolumeCounters>> {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).get(volume).cloned()
    }

    /// Forgets a deleted volume: a volume made again under its name starts from zero.
    pub fn remove(&self, volume: &str) {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).remove(volume);
    }
}

/// The symbolic name of an errno (`ENOENT`); numbers for those not listed.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSYS => "ENOSYS",
        libc::EINTR => "EINTR",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_by_operation_with_errors() {
        let c = VolumeCounters::new("v");
        for _ in 0..3 {
            drop(c.request(Op::Create));
        }
        let failing = c.request(Op::Rmdir);
        failing.failed(libc::ENOTEMPTY);
        drop(failing);
        let stats = c.requests();
        assert_eq!(stats.len(), 2);
        assert_eq!((stats[0].op.as_str(), stats[0].latency.count()), ("rmdir", 1));
        assert_eq!(stats[0].errors, BTreeMap::from([("ENOTEMPTY".to_string(), 1)]));
        assert_eq!((stats[1].op.as_str(), stats[1].latency.count()), ("create", 3));
        assert!(stats[1].errors.is_empty());
    }

    #[test]
    fn every_operation_has_its_own_name_and_slot() {
        let names: std::collections::HashSet<_> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Op::ALL.len());
        assert!(Op::ALL.iter().enumerate().all(|(i, op)| *op as usize == i));
    }

    #[test]
    fn observations_fall_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1));
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_secs(60));
        let l = h.snapshot();
        assert_eq!(l.count(), 3);
        assert_eq!(l.buckets[0], 1);
        assert_eq!(l.buckets[4], 1);
        assert_eq!(l.buckets[LATENCY_BOUNDS.len()], 1);
        assert!((l.sum_seconds - 60.000031).abs() < 1e-9);
    }
}
