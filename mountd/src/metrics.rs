//! mountd's Prometheus metrics (`mountd serve --metrics-addr`): CSI RPCs by method and gRPC
//! code with their latency (a layer on the gRPC server, so they are counted as the sidecars and
//! the kubelet see them), Docker plugin requests by call and result; and, read at each scrape,
//! the volumes attached, staged and published, Docker's volumes, and standalone mode's claims
//! and volumes by phase.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tonic::codegen::http;
use volfs_api::metrics::{Families, Labels, Registry, Scrape, Unit};
use volfs_api::LATENCY_BOUNDS;

use crate::driver::Driver;
use crate::records::{AttachmentRecord, DockerRecord, PublicationRecord, StageRecord};
use crate::standalone::engine::Engine;
use crate::standalone::object::{Kind, Object};

/// Every CSI v1 method; any other path is counted as `unknown`, so labels stay bounded.
const CSI_METHODS: [&str; 28] = [
    "GetPluginInfo",
    "GetPluginCapabilities",
    "Probe",
    "CreateVolume",
    "DeleteVolume",
    "ControllerPublishVolume",
    "ControllerUnpublishVolume",
    "ValidateVolumeCapabilities",
    "ListVolumes",
    "GetCapacity",
    "ControllerGetCapabilities",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ListSnapshots",
    "ControllerExpandVolume",
    "ControllerGetVolume",
    "ControllerModifyVolume",
    "GetSnapshot",
    "NodeStageVolume",
    "NodeUnstageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeGetVolumeStats",
    "NodeExpandVolume",
    "NodeGetCapabilities",
    "NodeGetInfo",
    "GroupControllerGetCapabilities",
    "CreateVolumeGroupSnapshot",
];

type Latencies = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

/// The request counters; the rest is read at scrape time.
pub struct Metrics {
    csi: Family<Labels, Counter>,
    csi_latency: Latencies,
    docker: Family<Labels, Counter>,
    docker_latency: Latencies,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            csi: Family::default(),
            csi_latency: Family::new_with_constructor(latency_histogram),
            docker: Family::default(),
            docker_latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    /// One CSI RPC answered with `code` after `took`.
    fn csi(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.csi.get_or_create(&vec![("method", method.to_string()), ("code", code_name(code))]).inc();
        self.csi_latency.get_or_create(&vec![("method", method.to_string())]).observe(took.as_secs_f64());
    }

    /// One Docker plugin call (a name from the protocol) answered with `code` after `took`.
    pub fn docker(&self, call: &'static str, code: tonic::Code, took: Duration) {
        self.docker.get_or_create(&vec![("call", call.to_string()), ("code", code_name(code))]).inc();
        self.docker_latency.get_or_create(&vec![("call", call.to_string())]).observe(took.as_secs_f64());
    }

    /// The registry to serve: these counters and the figures read at each scrape.
    pub fn registry(&self, driver: Arc<Driver>, engine: Arc<Engine>) -> Registry {
        let mut registry = Registry::default();
        registry.register("mountd_csi_requests", "CSI RPCs answered, by method and gRPC code.", self.csi.clone());
        registry.register_with_unit(
            "mountd_csi_request_duration",
            "Time to answer a CSI RPC, by method.",
            Unit::Seconds,
            self.csi_latency.clone(),
        );
        registry.register(
            "mountd_docker_requests",
            "Docker volume-plugin calls answered, by call and result (gRPC code names).",
            self.docker.clone(),
        );
        registry.register_with_unit(
            "mountd_docker_request_duration",
            "Time to answer a Docker volume-plugin call, by call.",
            Unit::Seconds,
            self.docker_latency.clone(),
        );
        registry.register_collector(Box::new(Scrape(move |f: &mut Families| {
            let read = |e: &dyn std::fmt::Display| {
                tracing::warn!(error = %e, "metrics: reading mountd's records failed");
                std::fmt::Error
            };
            let attached = driver.records.all::<AttachmentRecord>().map_err(|e| read(&e))?.len();
            let staged = driver.records.all::<StageRecord>().map_err(|e| read(&e))?.len();
            let published = driver.records.all::<PublicationRecord>().map_err(|e| read(&e))?;
            let docker = driver.records.all::<DockerRecord>().map_err(|e| read(&e))?;
            let states = [("attached", attached), ("staged", staged), ("published", published.len())];
            f.gauge(
                "mountd_volumes",
                "Volumes attached (ControllerPublish), staged (NodeStage) and published (NodePublish and Docker mounts).",
                None,
                states.map(|(s, n)| (vec![("state", s.to_string())], n as f64)),
            )?;
            let mounted = docker.iter().filter(|d| !d.mounted_by.is_empty()).count();
            f.gauge(
                "mountd_docker_volumes",
                "Docker volumes, and those mounted by at least one container.",
                None,
                [("created", docker.len()), ("mounted", mounted)].map(|(s, n)| (vec![("state", s.to_string())], n as f64)),
            )?;
            let claims = engine.get(Kind::PersistentVolumeClaim, None, None).map_err(|e| read(&e))?;
            let volumes = engine.get(Kind::PersistentVolume, None, None).map_err(|e| read(&e))?;
            f.gauge(
                "mountd_standalone_claims",
                "Standalone mode's PersistentVolumeClaims, by phase.",
                None,
                by_phase(&["Pending", "Bound", "Lost"], &claims),
            )?;
            f.gauge(
                "mountd_standalone_volumes",
                "Standalone mode's PersistentVolumes, by phase.",
                None,
                by_phase(&["Pending", "Available", "Bound", "Released", "Failed"], &volumes),
            )
        })));
        registry
    }
}

/// Objects counted by their status phase, every phase listed (also at zero).
fn by_phase(phases: &[&'static str], objects: &[Object]) -> Vec<(Labels, f64)> {
    let phase_of = |o: &Object| match o {
        Object::PersistentVolumeClaim(c) => crate::standalone::binder::claim_phase(c).to_string(),
        Object::PersistentVolume(v) => crate::standalone::binder::volume_phase(v).to_string(),
        _ => String::new(),
    };
    phases
        .iter()
        .map(|p| (vec![("phase", p.to_string())], objects.iter().filter(|o| phase_of(o) == *p).count() as f64))
        .collect()
}

/// gRPC's names for codes, as Prometheus exporters of gRPC servers label them (`OK`, `NotFound`).
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_string(),
        other => format!("{other:?}"),
    }
}

/// The CSI method a gRPC path names, if it is one.
fn csi_method(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or("");
    let known = ["/csi.v1.Identity/", "/csi.v1.Controller/", "/csi.v1.Node/", "/csi.v1.GroupController/"];
    match known.iter().any(|service| path.strip_prefix(service) == Some(method)) {
        true => CSI_METHODS.iter().find(|m| **m == method).copied().unwrap_or("unknown"),
        false => "unknown",
    }
}

/// The tower layer that counts every CSI RPC the gRPC server answers.
#[derive(Clone)]
pub struct CsiLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CsiLayer {
    type Service = CountCsi<S>;

    fn layer(&self, inner: S) -> CountCsi<S> {
        CountCsi { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct CountCsi<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for CountCsi<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = csi_method(request.uri().path());
        let start = Instant::now();
        let answer = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            // A failed unary RPC is answered with its status in the headers; a successful one
            // carries OK in the trailers.
            let code = match &answer {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.csi(method, code, start.elapsed());
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_csi_methods_become_labels() {
        assert_eq!(csi_method("/csi.v1.Node/NodePublishVolume"), "NodePublishVolume");
        assert_eq!(csi_method("/csi.v1.Identity/Probe"), "Probe");
        assert_eq!(csi_method("/csi.v1.Node/Whatever"), "unknown");
        assert_eq!(csi_method("/other.Service/Probe"), "unknown");
        assert_eq!(csi_method("/csi.v1.Node/x/NodePublishVolume"), "unknown");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::NotFound), "NotFound");
    }
}
