//! mountd: the volfs control plane. It serves the CSI v1 services (`identity`, `controller`,
//! `node`) and the Docker volume-plugin protocol (`docker`) on unix sockets, keeps its records
//! (`records`) in an embedded transactional store, and acts through the data plane's control
//! protocol (`dataplane`, `driver`); `reconcile` finishes at start what a crash left in flight.

pub mod capability;
pub mod client;
pub mod controller;
pub mod csi;
pub mod dataplane;
pub mod docker;
pub mod driver;
pub mod error;
pub mod identity;
pub mod inflight;
pub mod metrics;
pub mod node;
pub mod reconcile;
pub mod records;
pub mod serve;
pub mod standalone;
pub mod validate;
