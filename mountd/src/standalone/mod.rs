//! Standalone mode: the storage half of Kubernetes on a node without Kubernetes, from the same
//! YAML. `object` reads manifests into the API types, `store` keeps objects and events, the
//! controllers decide (pure functions of the objects), and `engine` carries out what they
//! decide through the same CSI services a cluster would call.

pub mod binder;
pub mod object;
pub mod selector;
pub mod snapshot;
pub mod store;
pub mod world;
