//! The Prometheus endpoint both daemons serve with `--metrics-addr`: a registry encoded by
//! prometheus-client in the OpenMetrics text format, over HTTP at `/metrics`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::{Registry, Unit};

use crate::Latency;

/// A sample's labels. Values must be bounded: names of volumes, operations, codes; never paths.
pub type Labels = Vec<(&'static str, String)>;

/// Writes metric families of figures taken at scrape time.
pub struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) -> fmt::Result {
        self.family(name, help, unit, MetricType::Gauge, samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
    }

    /// A counter: `_total` is added to `name` (after the unit).
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        self.family(name, help, unit, MetricType::Counter, samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
    }

    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        kind: MetricType,
        samples: impl Iterator<Item = (Labels, M)>,
    ) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (labels, metric) in samples {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram of durations, in seconds (`_seconds` is added to `name`).
    pub fn histogram<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, &'l Latency)>,
    ) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        for (labels, latency) in samples {
            family.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                latency.sum_seconds,
                latency.count(),
                &latency.bounded(),
                None,
            )?;
        }
        Ok(())
    }
}

/// Figures read at each scrape by `collect`.
pub struct Scrape<F>(pub F);

impl<F> fmt::Debug for Scrape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl<F> prometheus_client::collector::Collector for Scrape<F>
where
    F: Fn(&mut Families) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut Families(encoder))
    }
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// Serves `registry` at `http://ADDR/metrics` from a thread of its own; answers the address
/// bound (port 0 takes a free one).
pub fn serve(addr: &str, registry: Arc<Registry>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener made for tokio");
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let registry = registry.clone();
                    async move {
                        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                        ([(axum::http::header::CONTENT_TYPE, content_type)], encode(&registry))
                    }
                }),
            );
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("metrics endpoint {bound} stopped: {e}");
            }
        })
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_openmetrics() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(|f: &mut Families| {
            f.gauge("volfs_volume_used", "Bytes used.", Some(Unit::Bytes), [(vec![("volume", "a".into())], 4096.0)])?;
            f.counter("volfs_fuse_requests", "Requests.", None, [(vec![("op", "create".into())], 3)])?;
            let mut buckets = vec![0; crate::LATENCY_BOUNDS.len() + 1];
            (buckets[0], buckets[crate::LATENCY_BOUNDS.len()]) = (1, 2);
            let latency = Latency { buckets, sum_seconds: 0.5 };
            f.histogram("volfs_fuse_request_duration", "Service time.", [(vec![("op", "create".into())], &latency)])
        })));
        let text = encode(&registry);
        assert!(text.contains("# TYPE volfs_volume_used_bytes gauge\n"), "{text}");
        assert!(text.contains("volfs_volume_used_bytes{volume=\"a\"} 4096.0\n"), "{text}");
        assert!(text.contains("volfs_fuse_requests_total{op=\"create\"} 3\n"), "{text}");
        assert!(text.contains("volfs_fuse_request_duration_seconds_count{op=\"create\"} 3\n"), "{text}");
        assert!(
            text.contains("volfs_fuse_request_duration_seconds_bucket{le=\"0.000002\",op=\"create\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("volfs_fuse_request_duration_seconds_bucket{le=\"+Inf\",op=\"create\"} 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
