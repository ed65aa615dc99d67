//! The external-resizer's work: a bound claim whose request is above its capacity is expanded
//! with ControllerExpandVolume (online: a volfs volume grows while mounted, no node step), then
//! the PV's capacity and the claim's `status.capacity` follow.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::binder::{claim_request, storage};
use super::engine::{bytes_quantity, rpc_error, Engine};
use super::object::Object;
use super::store::Write;
use super::world::*;
use crate::csi::v1::controller_server::Controller as _;
use crate::csi::v1::{CapacityRange, ControllerExpandVolumeRequest};

const SOURCE: &str = "external-resizer csi.volfs.io";

#[derive(Clone, Debug, PartialEq)]
pub struct Expansion {
    pub claim: PersistentVolumeClaim,
    pub volume: PersistentVolume,
}

pub fn plan(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    for claim in &world.claims {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let (Some(wanted), Some(capacity)) =
            (claim_request(claim), storage(claim.status.as_ref().and_then(|s| s.capacity.as_ref())))
        else {
            continue;
        };
        if wanted.cmp_value(&capacity).is_le() {
            continue;
        }
        let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).and_then(|v| world.volume(v))
        else {
            continue;
        };
        actions.push(Action::Expand(Box::new(Expansion { claim: claim.clone(), volume: volume.clone() })));
    }
    actions
}

pub async fn carry_out(engine: &Engine, e: Expansion, now: i64) -> Vec<Write> {
    let claim = Object::PersistentVolumeClaim(e.claim.clone());
    let pv_name = e.volume.metadata.name.clone().unwrap_or_default();
    let Some(handle) = e
        .volume
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .filter(|c| c.driver == DRIVER)
        .map(|c| c.volume_handle.clone())
    else {
        let message = format!("persistentvolume {pv_name:?} is not a volfs volume: it cannot be expanded");
        return vec![event_write(&claim, true, "VolumeResizeFailed", message, SOURCE, now)];
    };
    let wanted = claim_request(&e.claim).map(|q| q.value().max(0) as i64).unwrap_or(0);
    let mut writes = vec![event_write(
        &claim,
        false,
        "Resizing",
        format!("External resizer is resizing volume {pv_name}"),
        SOURCE,
        now,
    )];
    let req = ControllerExpandVolumeRequest {
        volume_id: handle,
        capacity_range: Some(CapacityRange { required_bytes: wanted, limit_bytes: 0 }),
        ..Default::default()
    };
    match engine.controller.controller_expand_volume(tonic::Request::new(req)).await {
        Ok(r) => {
            let capacity = bytes_quantity(r.into_inner().capacity_bytes.max(wanted) as u64);
            let mut volume = e.volume.clone();
            volume.spec.get_or_insert_default().capacity = Some([("storage".to_string(), capacity.clone())].into());
            let mut resized = e.claim.clone();
            resized.status.get_or_insert_default().capacity = Some([("storage".to_string(), capacity)].into());
            writes.push(Write::Put(Box::new(Object::PersistentVolume(volume))));
            writes.push(Write::Put(Box::new(Object::PersistentVolumeClaim(resized))));
            writes.push(event_write(
                &claim,
                false,
                "VolumeResizeSuccessful",
                "Resize volume succeeded".into(),
                SOURCE,
                now,
            ));
        }
        Err(s) => {
            let message = format!("resize volume {pv_name:?} by resizer \"csi.volfs.io\" failed: {}", rpc_error(s));
            writes.push(event_write(&claim, true, "VolumeResizeFailed", message, SOURCE, now));
        }
    }
    writes
}
