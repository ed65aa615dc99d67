//! The volfs control protocol: what the CLI and mountd ask the data plane (`volfs serve`) and
//! what it answers, over one unix socket. One JSON request and one JSON answer per connection.
//! The data plane implements it; `Client` is the one client, used by the CLI and mountd alike.

mod client;
mod error;
pub mod metrics;
mod names;
pub mod quantity;
mod stats;
mod types;

pub use client::{socket_path, Client, DEFAULT_SOCKET, SOCKET_RECORD};
pub use error::{ApiError, ErrorKind};
pub use names::VolumeName;
pub use stats::{Latency, OpStats, PoolStats, VolumeStats, LATENCY_BOUNDS};
pub use types::*;
