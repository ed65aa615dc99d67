//! What `volfs stats` and `volfs top` print: the daemon's figures (`PoolStats`) as tables.
//! Pure functions of the figures, so what a person sees is tested without a terminal.

use std::fmt::Write;
use std::time::Duration;

use volfs_api::{Latency, PoolStats, VolumeStats};

use crate::quantity::HumanBytes;

/// Seconds as the shortest readable unit: `12µs`, `3.4ms`, `1.2s`.
pub fn seconds_text(s: f64) -> String {
    if s.is_infinite() {
        ">10s".to_string()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.1}s")
    }
}

/// A latency quantile as an upper bound (`≤25µs`), or `-` without events.
fn quantile_text(latency: &Latency, q: f64) -> String {
    latency.quantile(q).map(|s| format!("≤{}", seconds_text(s))).unwrap_or_else(|| "-".to_string())
}

/// `volfs stats`: every request counted since the daemon started, by volume and operation.
pub fn stats_table(stats: &PoolStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:<16} {:>10} {:>8} {:>9} {:>9} {:>9}",
        "VOLUME", "OP", "REQUESTS", "ERRORS", "MEAN", "P50", "P99"
    );
    for v in &stats.volumes {
        for r in &v.requests {
            let count = r.latency.count();
            let errors: u64 = r.errors.values().sum();
            let mean = r.latency.sum_seconds / count.max(1) as f64;
            let _ = writeln!(
                out,
                "{:<32} {:<16} {:>10} {:>8} {:>9} {:>9} {:>9}",
                v.name(),
                r.op,
                count,
                errors,
                seconds_text(mean),
                quantile_text(&r.latency, 0.5),
                quantile_text(&r.latency, 0.99)
            );
        }
    }
    let commits = &stats.commits;
    let _ = writeln!(
        out,
        "metadata: {} commits (p50 {}, p99 {}), {} syncs (p50 {}, p99 {})",
        commits.count(),
        quantile_text(commits, 0.5),
        quantile_text(commits, 0.99),
        stats.syncs.count(),
        quantile_text(&stats.syncs, 0.5),
        quantile_text(&stats.syncs, 0.99)
    );
    out
}

/// One screen of `volfs top`: each volume's rates between two readings `elapsed` apart.
pub fn top_screen(before: &PoolStats, now: &PoolStats, elapsed: Duration, title: &str) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<32} {:>9} {:>10} {:>10} {:>9} {:>10} {:>10} {:>5} {:>6}",
        "VOLUME", "OPS/S", "READ/S", "WRITE/S", "P99", "USED", "CAPACITY", "USE%", "MOUNTS"
    );
    for v in &now.volumes {
        let zero = VolumeStats::default();
        let was = before.volumes.iter().find(|b| b.name() == v.name()).unwrap_or(&zero);
        let ops = v.request_count().saturating_sub(was.request_count()) as f64 / secs;
        let rate = |now: u64, was: u64| HumanBytes((now.saturating_sub(was) as f64 / secs) as u64).to_string();
        let (capacity, percent) = match v.capacity_bytes {
            Some(c) => (HumanBytes(c).to_string(), format!("{}%", v.used_bytes * 100 / c.max(1))),
            None => ("-".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{:<32} {:>9.0} {:>10} {:>10} {:>9} {:>10} {:>10} {:>5} {:>6}",
            v.name(),
            ops,
            rate(v.read_bytes, was.read_bytes),
            rate(v.written_bytes, was.written_bytes),
            quantile_text(&v.latency().since(&was.latency()), 0.99),
            HumanBytes(v.used_bytes).to_string(),
            capacity,
            percent,
            v.mounts + v.subpath_mounts
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use volfs_api::{OpStats, LATENCY_BOUNDS};

    fn latency(count: u64, bucket: usize) -> Latency {
        let mut buckets = vec![0; LATENCY_BOUNDS.len() + 1];
        buckets[bucket] = count;
        Latency { buckets, sum_seconds: count as f64 * LATENCY_BOUNDS[bucket] }
    }

    fn volume(creates: u64, written: u64) -> VolumeStats {
        VolumeStats {
            volume: "demo".into(),
            capacity_bytes: Some(1 << 30),
            used_bytes: 256 << 20,
            mounts: 1,
            written_bytes: written,
            requests: vec![OpStats { op: "create".into(), latency: latency(creates, 3), ..OpStats::default() }],
            ..VolumeStats::default()
        }
    }

    #[test]
    fn top_shows_rates_between_readings() {
        let before = PoolStats { volumes: vec![volume(100, 0)], ..PoolStats::default() };
        let now = PoolStats { volumes: vec![volume(300, 8 << 20)], ..PoolStats::default() };
        let screen = top_screen(&before, &now, Duration::from_secs(2), "t");
        let row = screen.lines().find(|l| l.starts_with("demo")).expect(&screen);
        let cells: Vec<_> = row.split_whitespace().collect();
        // 200 creates and 8 MiB in 2 s; p99 in the create bucket; a quarter of 1 GiB used.
        assert_eq!(cells[1], "100", "{screen}");
        assert_eq!(&cells[4..6], ["4.0", "MiB"], "{screen}");
        assert_eq!(cells[6], "≤25µs", "{screen}");
        assert!(row.contains("25%"), "{screen}");
    }

    #[test]
    fn stats_lists_each_operation() {
        let stats = PoolStats { volumes: vec![volume(3, 0)], ..PoolStats::default() };
        let table = stats_table(&stats);
        let row = table.lines().find(|l| l.starts_with("demo")).expect(&table);
        assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["demo", "create", "3", "0", "25µs", "≤25µs", "≤25µs"]);
    }
}
