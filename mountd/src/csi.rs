//! The CSI v1 protocol (generated from proto/csi.proto at build time).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("csi.v1");
}
