//! Standalone mode: the storage half of Kubernetes on a node without Kubernetes, from the same
//! YAML. `object` reads manifests into the API types, `store` keeps objects and events, the
//! controllers decide (pure functions of the objects), and `engine` carries out what they
//! decide through the same CSI services a cluster would call.

pub mod admission;
pub mod api;
pub mod binder;
pub mod cli;
pub mod engine;
pub mod memory;
pub mod object;
pub mod pods;
pub mod print;
pub mod protection;
pub mod resizer;
pub mod runtime;
pub mod selector;
pub mod snapshot;
pub mod snapshots;
pub mod store;
pub mod world;
