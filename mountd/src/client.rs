//! A CSI client over a unix socket, as the kubelet and the sidecars connect: what the tests,
//! the benchmark and tools use to talk to `mountd serve`.

use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// A channel to the CSI server listening on `socket`.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is required by the API and unused: every connection goes to the socket.
    Endpoint::from_static("http://[::1]:1")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
}
