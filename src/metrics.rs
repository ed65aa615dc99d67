//! The data plane's Prometheus metrics (`volfs serve --metrics-addr`): the daemon's figures
//! (`Service::stats`) as metric families, read at each scrape. Labels: `volume`, `snapshot`
//! (empty for the volume itself), `op`, `errno`, `kind`; all bounded, no paths or file names.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use volfs_api::metrics::{Families, Labels, Registry, Scrape, Unit};
use volfs_api::{PoolStats, VolumeStats};

use crate::daemon::Service;

/// Serves the metrics of `service` at `http://ADDR/metrics`; answers the address bound.
pub fn serve(addr: &str, service: Arc<Service>) -> std::io::Result<SocketAddr> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(move |f: &mut Families| match service.stats(true) {
        Ok(stats) => families(&stats, f),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: reading the pool's figures failed");
            Err(fmt::Error)
        }
    })));
    volfs_api::metrics::serve(addr, Arc::new(registry))
}

fn labels(v: &VolumeStats) -> Labels {
    vec![("volume", v.volume.clone()), ("snapshot", v.snapshot.clone().unwrap_or_default())]
}

fn with(v: &VolumeStats, more: &[(&'static str, &str)]) -> Labels {
    let mut l = labels(v);
    l.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    l
}

/// Every family, from one reading of the daemon's figures.
pub fn families(stats: &PoolStats, f: &mut Families) -> fmt::Result {
    let vols = &stats.volumes;
    let each = |value: fn(&VolumeStats) -> Option<u64>| {
        vols.iter().filter_map(move |v| value(v).map(|n| (labels(v), n as f64))).collect::<Vec<_>>()
    };
    let counted = |value: fn(&VolumeStats) -> u64| vols.iter().map(|v| (labels(v), value(v))).collect::<Vec<_>>();
    f.gauge(
        "volfs_volume_capacity",
        "The volume's capacity; volumes without one are not listed.",
        Some(Unit::Bytes),
        each(|v| v.capacity_bytes),
    )?;
    f.gauge(
        "volfs_volume_used",
        "Bytes of data blocks the volume's files hold.",
        Some(Unit::Bytes),
        each(|v| Some(v.used_bytes)),
    )?;
    f.gauge("volfs_volume_inodes_used", "Inodes the volume holds.", None, each(|v| Some(v.inodes)))?;
    f.gauge(
        "volfs_volume_inodes",
        "The most inodes the volume may hold; volumes bounded by the pool only are not listed.",
        None,
        each(|v| v.inode_limit),
    )?;
    f.gauge(
        "volfs_snapshot_exclusive",
        "Bytes only this snapshot holds: what deleting it frees.",
        Some(Unit::Bytes),
        each(|v| v.exclusive_bytes),
    )?;
    let snapshots = vols.iter().filter(|v| v.snapshot.is_none()).map(|v| {
        let n = vols.iter().filter(|s| s.snapshot.is_some() && s.volume == v.volume).count();
        (vec![("volume", v.volume.clone())], n as f64)
    });
    f.gauge("volfs_volume_snapshots", "Snapshots of the volume.", None, snapshots)?;
    let mounts = vols.iter().flat_map(|v| {
        [(with(v, &[("kind", "volume")]), v.mounts as f64), (with(v, &[("kind", "subpath")]), v.subpath_mounts as f64)]
    });
    f.gauge(
        "volfs_volume_mounts",
        "FUSE mounts: of the whole volume (kind=volume) and subPath mounts (kind=subpath).",
        None,
        mounts,
    )?;
    f.gauge(
        "volfs_projected_mounts",
        "Projected trees (configMap, secret, downwardAPI) mounted.",
        None,
        [(vec![], stats.projected_mounts as f64)],
    )?;
    f.counter(
        "volfs_read",
        "File data the daemon read for the kernel (passthrough reads are not seen).",
        Some(Unit::Bytes),
        counted(|v| v.read_bytes),
    )?;
    f.counter(
        "volfs_written",
        "File data the daemon wrote for the kernel (passthrough writes are not seen).",
        Some(Unit::Bytes),
        counted(|v| v.written_bytes),
    )?;
    f.counter(
        "volfs_passthrough_opens",
        "Opens whose I/O the kernel serves itself (FUSE passthrough).",
        None,
        counted(|v| v.passthrough_opens),
    )?;
    let requests = || vols.iter().flat_map(|v| v.requests.iter().map(move |r| (v, r)));
    f.counter(
        "volfs_fuse_requests",
        "FUSE requests served, by operation.",
        None,
        requests().map(|(v, r)| (with(v, &[("op", &r.op)]), r.latency.count())),
    )?;
    f.counter(
        "volfs_fuse_request_errors",
        "FUSE requests answered with an error, by operation and errno.",
        None,
        requests().flat_map(|(v, r)| {
            r.errors.iter().map(move |(errno, n)| (with(v, &[("op", &r.op), ("errno", errno)]), *n))
        }),
    )?;
    f.histogram(
        "volfs_fuse_request_duration",
        "Time from the request's arrival in the daemon to its answer, by operation.",
        requests().map(|(v, r)| (with(v, &[("op", &r.op)]), &r.latency)),
    )?;
    f.histogram(
        "volfs_metadata_commit_duration",
        "Metadata transactions committed, and the time each took.",
        [(vec![], &stats.commits)],
    )?;
    f.histogram(
        "volfs_metadata_sync_duration",
        "Syncs that made metadata commits durable, and the time each took.",
        [(vec![], &stats.syncs)],
    )?;
    f.gauge(
        "volfs_daemon_start_time",
        "Unix time the daemon started.",
        Some(Unit::Seconds),
        [(vec![], stats.started_unix)],
    )?;
    f.gauge(
        "volfs_daemon_startup_duration",
        "How long opening the pool took at start (with recovery after an unclean stop).",
        Some(Unit::Seconds),
        [(vec![], stats.start_seconds)],
    )?;
    f.gauge(
        "volfs_daemon_recovered",
        "1 if the daemon started after an unclean stop (a crash or SIGKILL) and recovered the pool.",
        None,
        [(vec![], if stats.recovered { 1.0 } else { 0.0 })],
    )
}
