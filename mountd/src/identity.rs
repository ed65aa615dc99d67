//! The CSI Identity service: who this plugin is, what it offers, and whether it is ready (it
//! is once the data plane answers).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi::v1::identity_server::Identity as IdentityService;
use crate::csi::v1::plugin_capability::{self, service, volume_expansion};
use crate::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::driver::Driver;

/// The driver's name, as StorageClasses and PVs name it.
pub const DRIVER_NAME: &str = "csi.volfs.io";

/// What a gRPC method answers.
type Reply<T> = std::result::Result<Response<T>, Status>;

pub struct Identity {
    driver: Arc<Driver>,
}

impl Identity {
    pub fn new(driver: Arc<Driver>) -> Self {
        Identity { driver }
    }
}

#[tonic::async_trait]
impl IdentityService for Identity {
    async fn get_plugin_info(&self, _request: Request<GetPluginInfoRequest>) -> Reply<GetPluginInfoResponse> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Reply<GetPluginCapabilitiesResponse> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(plugin_capability::Service { r#type: t as i32 })),
        };
        let online = PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(plugin_capability::VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(service::Type::ControllerService),
                service(service::Type::VolumeAccessibilityConstraints),
                online,
            ],
        }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Reply<ProbeResponse> {
        let ready = self.driver.data.client().ping().await.is_ok();
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
