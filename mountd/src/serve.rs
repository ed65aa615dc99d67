//! `mountd serve`: opens the records, makes sure a data plane serves the pool, finishes what a
//! previous run left in flight, then serves CSI (gRPC on a unix socket) and, when asked, the
//! Docker volume plugin (HTTP on a unix socket) until SIGTERM or SIGINT. Stopping never touches
//! a mount.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::csi::v1::controller_server::ControllerServer;
use crate::csi::v1::identity_server::IdentityServer;
use crate::csi::v1::node_server::NodeServer;
use crate::dataplane::DataPlane;
use crate::driver::Driver;
use crate::records::Records;
use crate::standalone::engine::{node_labels, Engine};
use crate::standalone::store::Store;
use crate::standalone::world::NodeInfo;

pub struct Config {
    pub state_dir: PathBuf,
    pub node_id: String,
    pub pool: PathBuf,
    pub volfs_socket: Option<PathBuf>,
    /// The binary to start a data plane with; `None`: another manager runs it.
    pub volfs_bin: Option<PathBuf>,
    pub csi_endpoint: String,
    pub docker_socket: Option<PathBuf>,
    pub max_volumes_per_node: i64,
    /// This node's labels, for standalone mode's node affinity.
    pub node_labels: std::collections::HashMap<String, String>,
    /// Run pods' containers through Docker.
    pub runtime: Option<crate::standalone::runtime::Docker>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    pub metrics_addr: Option<String>,
}

/// How often a missing data plane is looked for (and started) again.
const DATA_PLANE_RETRY: Duration = Duration::from_secs(2);

pub fn run(config: Config) -> anyhow::Result<()> {
    crate::validate::text("--node-id", &config.node_id, crate::validate::MAX_NODE_ID)?;
    private_dir(&config.state_dir)?;
    let csi_socket = unix_endpoint(&config.csi_endpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let records = Records::open(&config.state_dir).context("opening mountd's records")?;
        let log = config.state_dir.join("volfs.log");
        let data = DataPlane::new(config.pool.clone(), config.volfs_socket.clone(), config.volfs_bin.clone(), log);
        let driver = Arc::new(Driver::new(
            config.node_id.clone(),
            records,
            data,
            config.state_dir.clone(),
            config.max_volumes_per_node,
        ));
        // Serve once the data plane answers and the records are reconciled, or once it is
        // clear that it will not start soon (requests then get UNAVAILABLE until it does).
        match driver.data.ensure_running().await {
            Ok(pong) => {
                driver.data_plane_restarted(pong.pid);
                crate::reconcile::at_start(&driver).await;
            }
            Err(e) => tracing::warn!(error = %e, "the data plane is not available yet"),
        }
        let store = Store::open(&config.state_dir).context("opening standalone mode's objects")?;
        let info = NodeInfo {
            name: config.node_id.clone(),
            labels: node_labels(&config.node_id, config.node_labels.clone()),
            state_dir: config.state_dir.clone(),
            runtime: false,
        };
        let memory = crate::standalone::memory::MemoryPool::new(&config.state_dir, config.volfs_bin.clone());
        let engine = Arc::new(Engine::new(store, driver.clone(), info, config.runtime.clone(), memory));
        tokio::spawn(keep_data_plane(driver.clone(), engine.clone()));
        let api_socket = crate::standalone::api::socket_path(&config.state_dir);
        let api = bind(&api_socket)?;
        tokio::spawn(crate::standalone::api::serve(engine.clone(), api));
        tokio::spawn(engine.clone().run());
        if let Some(addr) = &config.metrics_addr {
            let registry = driver.metrics.registry(driver.clone(), engine.clone());
            let bound = volfs_api::metrics::serve(addr, Arc::new(registry))?;
            tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
        }

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let csi = bind(&csi_socket)?;
        tracing::info!(endpoint = %config.csi_endpoint, node = %config.node_id, pool = %config.pool.display(), "serving CSI");
        let csi_server = tonic::transport::Server::builder()
            .layer(crate::metrics::CsiLayer(driver.metrics.clone()))
            .add_service(IdentityServer::new(crate::identity::Identity::new(driver.clone())))
            .add_service(ControllerServer::new(crate::controller::Controller::new(driver.clone())))
            .add_service(NodeServer::new(crate::node::Node::new(driver.clone())))
            .serve_with_incoming_shutdown(UnixListenerStream::new(csi), stopped(stop_rx.clone()));
        let docker = match &config.docker_socket {
            Some(path) => {
                let listener = bind(path)?;
                tracing::info!(socket = %path.display(), "serving the Docker volume plugin");
                let router = crate::docker::router(driver.clone());
                let server = axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone()));
                Some(tokio::spawn(async move { server.await }))
            }
            None => None,
        };
        csi_server.await.context("serving CSI")?;
        if let Some(docker) = docker {
            docker.await?.context("serving the Docker plugin")?;
        }
        let _ = std::fs::remove_file(&csi_socket);
        let _ = std::fs::remove_file(&api_socket);
        if let Some(path) = &config.docker_socket {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("stopped; mounts stay served by the data plane");
        Ok(())
    })
}

/// Starts the data plane when it is missing, and finishes what the records left in flight
/// (and the pods' mounts it served) once it answers (again).
async fn keep_data_plane(driver: Arc<Driver>, engine: Arc<Engine>) {
    loop {
        match driver.data.ensure_running().await {
            Ok(pong) => {
                if driver.data_plane_restarted(pong.pid) {
                    crate::reconcile::at_start(&driver).await;
                    engine.data_plane_restarted();
                }
            }
            Err(e) => tracing::warn!(error = %e, "the data plane is not available"),
        }
        tokio::time::sleep(DATA_PLANE_RETRY).await;
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot watch for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// A directory only root can enter, whatever the umask; a looser existing one is tightened.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "tightening to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `unix:///path` (or a bare absolute path) → the socket path.
fn unix_endpoint(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!("--csi-endpoint {endpoint:?}: only unix sockets are served (unix:///path/csi.sock)");
    }
    Ok(PathBuf::from(path))
}

/// Listens on a unix socket that only root may use, replacing a stale one.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{} is in use by another server", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        assert_eq!(unix_endpoint("unix:///run/volfs/csi.sock").unwrap(), PathBuf::from("/run/volfs/csi.sock"));
        assert_eq!(unix_endpoint("/csi/csi.sock").unwrap(), PathBuf::from("/csi/csi.sock"));
        assert!(unix_endpoint("tcp://127.0.0.1:10000").unwrap_err().to_string().contains("unix"));
    }
}
