//! What the data plane counts as it serves, as `Request::Stats` answers it: the figures behind
//! `volfs stats`, `volfs top` and the Prometheus endpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds, in seconds, of the latency histogram's buckets; one more bucket holds the rest.
/// From 2 µs (a cached lookup) to 2.5 s (a large fsync).
pub const LATENCY_BOUNDS: [f64; 20] = [
    2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// The pool's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Unix time the daemon started, and how long opening the pool took then (with the recount
    /// after an unclean stop).
    pub started_unix: f64,
    pub start_seconds: f64,
    /// Whether the last stop before this start was unclean (a crash or SIGKILL).
    pub recovered: bool,
    /// Metadata transactions committed, and syncs that made them durable, with their latency.
    pub commits: Latency,
    pub syncs: Latency,
    /// Projected trees mounted.
    pub projected_mounts: u64,
    /// Every volume and snapshot, by name.
    pub volumes: Vec<VolumeStats>,
}

/// One volume or snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    pub volume: String,
    /// The snapshot's own name (after the `@`), for a snapshot.
    #[serde(default)]
    pub snapshot: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub used_bytes: u64,
    pub inodes: u64,
    /// The most inodes it may hold; None: bounded by the pool only.
    #[serde(default)]
    pub inode_limit: Option<u64>,
    /// For a snapshot: bytes no volume or other snapshot shares (what deleting it frees).
    #[serde(default)]
    pub exclusive_bytes: Option<u64>,
    /// Mounts of the whole volume, and subPath mounts of it.
    pub mounts: u64,
    pub subpath_mounts: u64,
    /// File data read and written by the daemon (passthrough I/O goes to the kernel directly
    /// and is not seen here).
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Opens the kernel serves itself (FUSE passthrough).
    pub passthrough_opens: u64,
    /// FUSE requests served, by operation (only those served at least once).
    pub requests: Vec<OpStats>,
}

impl VolumeStats {
    /// `VOLUME` or `VOLUME@SNAPSHOT`.
    pub fn name(&self) -> String {
        match &self.snapshot {
            Some(s) => format!("{}@{s}", self.volume),
            None => self.volume.clone(),
        }
    }

    /// Requests served, all operations together.
    pub fn request_count(&self) -> u64 {
        self.requests.iter().map(|r| r.latency.count()).sum()
    }

    /// The service time of every request together.
    pub fn latency(&self) -> Latency {
        let mut all = Latency::default();
        for r in &self.requests {
            all.add(&r.latency);
        }
        all
    }
}

/// One FUSE operation on one volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// The operation, lower case (`lookup`, `create`, ...).
    pub op: String,
    pub latency: Latency,
    /// Failed requests by errno name (`ENOENT`, ...).
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

/// A latency histogram over `LATENCY_BOUNDS`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Events per bucket (not cumulative); the last is above every bound.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
}

impl Latency {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, other: &Latency) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// What happened since `earlier` (a histogram of the same counter, taken before); nothing
    /// where the counter started again from zero in between (a restarted daemon).
    pub fn since(&self, earlier: &Latency) -> Latency {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Latency { buckets, sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0) }
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1): at most this many seconds.
    /// None without events; infinity when it falls above every bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// (upper bound, events in the bucket), the last bound infinite: prometheus-client's buckets.
    pub fn bounded(&self) -> Vec<(f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, n)| (LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(buckets: &[u64]) -> Latency {
        Latency { buckets: buckets.to_vec(), sum_seconds: 0.0 }
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let l = latency(&[0, 90, 9, 1]);
        assert_eq!(l.quantile(0.5), Some(LATENCY_BOUNDS[1]));
        assert_eq!(l.quantile(0.9), Some(LATENCY_BOUNDS[1]));
        assert_eq!(l.quantile(0.99), Some(LATENCY_BOUNDS[2]));
        assert_eq!(l.quantile(1.0), Some(LATENCY_BOUNDS[3]));
        assert_eq!(latency(&[]).quantile(0.5), None);
        let mut over = vec![0; LATENCY_BOUNDS.len() + 1];
        over[LATENCY_BOUNDS.len()] = 1;
        assert_eq!(latency(&over).quantile(0.5), Some(f64::INFINITY));
    }

    #[test]
    fn differences_and_sums() {
        let (a, b) = (latency(&[1, 2, 3]), latency(&[2, 5, 3]));
        assert_eq!(b.since(&a).buckets, vec![1, 3, 0]);
        assert_eq!(a.since(&b).buckets, vec![0, 0, 0], "a counter that started again");
        let mut s = latency(&[1]);
        s.add(&a);
        assert_eq!(s.buckets, vec![2, 2, 3]);
        assert_eq!(b.bounded(), vec![(LATENCY_BOUNDS[0], 2), (LATENCY_BOUNDS[1], 5), (LATENCY_BOUNDS[2], 3)]);
    }
}
