//! volfs: container volumes served by a FUSE daemon from a pool on the node.
//!
//! Layers, each using only the one below it: `fuse` (the kernel adapter) → `core` (POSIX
//! semantics) → `meta` (transactional metadata engine) and `data` (data files). `pool` owns a
//! pool directory, `daemon` serves it the control protocol (`volfs_api`).

pub mod core;
pub mod daemon;
pub mod data;
pub mod error;
pub mod fsck;
pub mod fuse;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod pool;
pub mod projected;
pub mod report;
pub mod stats;

pub use error::{Error, Result};
pub use volfs_api::quantity;
