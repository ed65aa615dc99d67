//! The CSI Controller service: volumes and snapshots (through the data plane, recorded first),
//! attachments to this node, expansion, listing with pagination.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::capability::{self, one_mode};
use crate::csi::v1::controller_server::Controller as ControllerService;
use crate::csi::v1::controller_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use crate::csi::v1::*;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::records::{AttachmentRecord, Origin, SnapshotRecord, State, VolumeRecord};
use crate::validate;

/// What a gRPC method answers.
type Reply<T> = std::result::Result<Response<T>, Status>;

pub struct Controller {
    driver: Arc<Driver>,
}

impl Controller {
    pub fn new(driver: Arc<Driver>) -> Self {
        Controller { driver }
    }
}

/// Parameters the external-provisioner adds itself (`--extra-create-metadata`); volfs takes
/// no parameters of its own.
const PROVISIONER_PARAMETER_PREFIX: &str = "csi.storage.k8s.io/";

/// The capacity a range asks for: `None` when it sets no bound (the volume gets none).
fn capacity_of(range: Option<&CapacityRange>, pool_size: u64) -> Result<Option<u64>> {
    let Some(range) = range else { return Ok(None) };
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(Error::InvalidArgument("capacity_range bytes must not be negative".into()));
    }
    let (required, limit) = (range.required_bytes as u64, range.limit_bytes as u64);
    if limit > 0 && required > limit {
        return Err(Error::OutOfRange(format!(
            "capacity_range: required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let capacity = if required > 0 { required } else { limit };
    if capacity > pool_size {
        return Err(Error::OutOfRange(format!(
            "capacity {capacity} bytes is more than the pool's whole filesystem ({pool_size} bytes)"
        )));
    }
    Ok((capacity > 0).then_some(capacity))
}

fn parameters(params: &HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    let params = validate::map("parameters", params)?;
    if let Some(k) = params.keys().find(|k| !k.starts_with(PROVISIONER_PARAMETER_PREFIX)) {
        return Err(Error::InvalidArgument(format!("parameter {k:?} is not known: volfs takes no parameters")));
    }
    Ok(params)
}

/// One page of `items`: `token` is the index to start at (empty: 0), the answer's token the
/// next index (empty: no more).
fn page<T>(items: Vec<T>, max_entries: i32, token: &str) -> Result<(Vec<T>, String)> {
    if max_entries < 0 {
        return Err(Error::InvalidArgument(format!("max_entries {max_entries} is negative")));
    }
    let start = match token {
        "" => 0,
        t => t.parse::<usize>().ok().filter(|s| *s <= items.len()).ok_or_else(|| {
            Error::Aborted(format!("starting_token {t:?} is not a token this driver gave (start again without one)"))
        })?,
    };
    let end = if max_entries == 0 { items.len() } else { (start + max_entries as usize).min(items.len()) };
    let next = if end < items.len() { end.to_string() } else { String::new() };
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

impl Controller {
    fn volume_message(&self, record: &VolumeRecord, source: Option<VolumeContentSource>) -> Volume {
        Volume {
            capacity_bytes: record.capacity.unwrap_or(0) as i64,
            volume_id: record.volume_id.clone(),
            volume_context: HashMap::new(),
            content_source: source,
            accessible_topology: vec![capability::topology(&self.driver.node_id)],
        }
    }

    fn snapshot_message(&self, s: &SnapshotRecord) -> Snapshot {
        Snapshot {
            size_bytes: s.size_bytes as i64,
            snapshot_id: s.snapshot_id.clone(),
            source_volume_id: s.source_volume_id.clone(),
            creation_time: Some(prost_types::Timestamp { seconds: s.created_unix, nanos: 0 }),
            ready_to_use: true,
            group_snapshot_id: String::new(),
        }
    }

    fn volume_status(&self, volume_id: &str, present: bool) -> Result<ListVolumesStatus> {
        Ok(self.status_parts(volume_id, present)?.into())
    }

    fn status_parts(&self, volume_id: &str, present: bool) -> Result<(Vec<String>, VolumeCondition)> {
        let nodes = self
            .driver
            .records
            .with_prefix::<AttachmentRecord>(&crate::records::pair_key(volume_id, ""))?
            .into_iter()
            .map(|a| a.node_id)
            .collect();
        let condition = if present {
            VolumeCondition { abnormal: false, message: "the data plane serves it".into() }
        } else {
            VolumeCondition { abnormal: true, message: format!("the data plane has no volume {volume_id}") }
        };
        Ok((nodes, condition))
    }

    async fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        let name = validate::text("name", &req.name, validate::MAX_STRING)?;
        capability::access_modes(&req.volume_capabilities, Error::InvalidArgument)?;
        let (pool_size, _) = self.driver.data.pool_space()?;
        let capacity = capacity_of(req.capacity_range.as_ref(), pool_size)?;
        let params = parameters(&req.parameters)?;
        if !req.mutable_parameters.is_empty() {
            return Err(Error::InvalidArgument("mutable_parameters are not supported: volfs has none".into()));
        }
        capability::satisfies(req.accessibility_requirements.as_ref(), &self.driver.node_id)?;
        let origin = self.origin(req.volume_content_source.as_ref(), capacity).await?;
        let _guard = self.driver.inflight.begin(&format!("name:{name}"), &format!("volume {name}"))?;

        let records = &self.driver.records;
        if let Some(existing) = records.all::<VolumeRecord>()?.into_iter().find(|v| v.name == name) {
            if existing.capacity != capacity || existing.parameters != params || existing.origin != origin {
                return Err(Error::AlreadyExists(format!(
                    "volume {name} exists with other arguments (capacity {:?}, source {:?})",
                    existing.capacity, existing.origin
                )));
            }
            if existing.state == State::Deleting {
                return Err(Error::Aborted(format!("volume {name} is being deleted")));
            }
            if existing.state == State::Creating {
                self.driver.create_volume(&existing).await?;
            }
            return Ok(CreateVolumeResponse {
                volume: Some(self.volume_message(&existing, req.volume_content_source)),
            });
        }
        let mut volume_id = validate::data_plane_name(name, "csi", |_| false);
        while self.driver.volume_name_taken(&volume_id).await? {
            volume_id = validate::data_plane_name(name, "csi", |n| n == volume_id);
        }
        let record = VolumeRecord {
            volume_id,
            name: name.to_string(),
            capacity,
            parameters: params,
            origin,
            ephemeral: false,
            state: State::Creating,
        };
        let info = self.driver.create_volume(&record).await?;
        let record = VolumeRecord { capacity: info.capacity, state: State::Ready, ..record };
        tracing::info!(name, volume = %record.volume_id, capacity = ?record.capacity, "created volume");
        Ok(CreateVolumeResponse { volume: Some(self.volume_message(&record, req.volume_content_source)) })
    }

    /// The content source, checked to exist and to fit in `capacity`.
    async fn origin(&self, source: Option<&VolumeContentSource>, capacity: Option<u64>) -> Result<Option<Origin>> {
        let Some(source) = source else { return Ok(None) };
        let too_small = |what: &str, needs: u64| match capacity {
            Some(c) if c < needs => {
                Err(Error::OutOfRange(format!("capacity {c} bytes is less than {what} needs ({needs} bytes)")))
            }
            _ => Ok(()),
        };
        match &source.r#type {
            Some(SourceType::Snapshot(SnapshotSource { snapshot_id })) => {
                let id = validate::id("volume_content_source.snapshot.snapshot_id", snapshot_id)?;
                let recorded = self.driver.records.get::<SnapshotRecord>(id)?.filter(|s| s.state == State::Ready);
                let needs = match recorded {
                    Some(snapshot) => snapshot.size_bytes,
                    // A snapshot the data plane cut without mountd, as a pre-provisioned
                    // VolumeSnapshotContent names one (like a static PV names a volume).
                    None => self.unrecorded_snapshot(id).await?.size_bytes,
                };
                too_small(&format!("snapshot {id}"), needs)?;
                Ok(Some(Origin::Snapshot(id.to_string())))
            }
            Some(SourceType::Volume(VolumeSource { volume_id })) => {
                let id = validate::id("volume_content_source.volume.volume_id", volume_id)?;
                let info = self.driver.existing_volume(id).await?;
                too_small(&format!("volume {id}"), info.capacity.unwrap_or(info.used_bytes))?;
                Ok(Some(Origin::Volume(id.to_string())))
            }
            None => Err(Error::InvalidArgument("volume_content_source names neither a snapshot nor a volume".into())),
        }
    }

    /// A data-plane snapshot `VOLUME@SNAP` that mountd has no record of.
    async fn unrecorded_snapshot(&self, id: &str) -> Result<volfs_api::SnapshotInfo> {
        let missing = || Error::NotFound(format!("snapshot {id} does not exist"));
        let wanted = volfs_api::SnapshotRef::parse(id).map_err(|_| missing())?;
        let listed = match self.driver.data.client().list_snapshots(Some(&wanted.volume)).await {
            Ok(list) => list,
            Err(e) if e.kind == volfs_api::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        listed.into_iter().find(|s| s.name == id).ok_or_else(missing)
    }

    async fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        // A volume this driver did not create (or deleted already) is not its to delete.
        let Some(record) = self.driver.records.get::<VolumeRecord>(id)? else {
            return Ok(DeleteVolumeResponse {});
        };
        if let Some(p) = self.driver.publications_of(id)?.first() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is published at {}; unpublish it first",
                p.target.display()
            )));
        }
        if let Some(a) = self.driver.records.with_prefix::<AttachmentRecord>(&crate::records::pair_key(id, ""))?.first()
        {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is attached to node {}; unpublish it first",
                a.node_id
            )));
        }
        self.driver.delete_volume(&record).await?;
        Ok(DeleteVolumeResponse {})
    }

    async fn controller_publish(&self, req: ControllerPublishVolumeRequest) -> Result<ControllerPublishVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let node = validate::text("node_id", &req.node_id, validate::MAX_NODE_ID)?;
        let mode = one_mode(req.volume_capability.as_ref(), Error::InvalidArgument)?;
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        self.driver.existing_volume(id).await?;
        let attached = self.driver.records.with_prefix::<AttachmentRecord>(&crate::records::pair_key(id, ""))?;
        if let Some(other) = attached.iter().find(|a| a.node_id != node) {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is attached to node {} with a single-node access mode; it cannot be attached to node {node} too",
                other.node_id
            )));
        }
        if node != self.driver.node_id {
            return Err(Error::NotFound(format!(
                "node {node} is not known: volumes of this driver live on node {}",
                self.driver.node_id
            )));
        }
        let record =
            AttachmentRecord { volume_id: id.into(), node_id: node.into(), readonly: req.readonly, mode: mode as i32 };
        if let Some(existing) = attached.first() {
            if *existing != record {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is attached to node {node} with other arguments (readonly {}, {})",
                    existing.readonly,
                    mode_name(existing.mode)
                )));
            }
        } else {
            self.driver.records.put(&record)?;
        }
        Ok(ControllerPublishVolumeResponse { publish_context: HashMap::new() })
    }

    async fn controller_unpublish(
        &self,
        req: ControllerUnpublishVolumeRequest,
    ) -> Result<ControllerUnpublishVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        if !req.node_id.is_empty() {
            validate::text("node_id", &req.node_id, validate::MAX_NODE_ID)?;
        }
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        let attached = self.driver.records.with_prefix::<AttachmentRecord>(&crate::records::pair_key(id, ""))?;
        for a in attached.iter().filter(|a| req.node_id.is_empty() || a.node_id == req.node_id) {
            self.driver.records.remove::<AttachmentRecord>(&crate::records::Record::key(a))?;
        }
        Ok(ControllerUnpublishVolumeResponse {})
    }

    async fn validate_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(Error::InvalidArgument("volume_capabilities is missing".into()));
        }
        validate::map("volume_context", &req.volume_context)?;
        validate::map("parameters", &req.parameters)?;
        self.driver.existing_volume(id).await?;
        let mut unsupported = Vec::new();
        for cap in &req.volume_capabilities {
            match capability::access_mode(cap) {
                Ok(_) => {}
                Err(capability::Refusal::Malformed(m)) => {
                    return Err(Error::InvalidArgument(format!("volume_capabilities: {m}")))
                }
                Err(capability::Refusal::Unsupported(m)) => unsupported.push(m),
            }
        }
        if !unsupported.is_empty() {
            return Ok(ValidateVolumeCapabilitiesResponse { confirmed: None, message: unsupported.join("; ") });
        }
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: req.mutable_parameters,
            }),
            message: String::new(),
        })
    }

    async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let records: Vec<VolumeRecord> = self
            .driver
            .records
            .all::<VolumeRecord>()?
            .into_iter()
            .filter(|v| v.state == State::Ready && !v.ephemeral)
            .collect();
        let (records, next_token) = page(records, req.max_entries, &req.starting_token)?;
        let present: std::collections::HashSet<String> =
            self.driver.data.client().list_volumes().await?.into_iter().map(|v| v.name).collect();
        let entries = records
            .iter()
            .map(|r| {
                Ok(list_volumes_response::Entry {
                    volume: Some(self.volume_message(r, None)),
                    status: Some(self.volume_status(&r.volume_id, present.contains(&r.volume_id))?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ListVolumesResponse { entries, next_token })
    }

    async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        let (size, free) = self.driver.data.pool_space()?;
        let servable = req.volume_capabilities.iter().all(|c| capability::access_mode(c).is_ok())
            && req.accessible_topology.as_ref().is_none_or(|t| *t == capability::topology(&self.driver.node_id));
        let (available, maximum) = if servable { (free, size) } else { (0, 0) };
        Ok(GetCapacityResponse {
            available_capacity: available as i64,
            maximum_volume_size: Some(maximum as i64),
            minimum_volume_size: None,
        })
    }

    async fn create_snapshot(&self, req: CreateSnapshotRequest) -> Result<CreateSnapshotResponse> {
        let name = validate::text("name", &req.name, validate::MAX_STRING)?;
        let source = validate::id("source_volume_id", &req.source_volume_id)?;
        if !req.parameters.is_empty() {
            parameters(&req.parameters)?;
        }
        let _guard = self.driver.inflight.begin(&format!("snapshot:{name}"), &format!("snapshot {name}"))?;
        let records = &self.driver.records;
        if let Some(existing) = records.all::<SnapshotRecord>()?.into_iter().find(|s| s.name == name) {
            if existing.source_volume_id != source {
                return Err(Error::AlreadyExists(format!(
                    "snapshot {name} exists, of volume {} (not {source})",
                    existing.source_volume_id
                )));
            }
            let existing = match existing.state {
                State::Ready => existing,
                State::Creating => self.driver.create_snapshot(&existing).await?.0,
                State::Deleting => return Err(Error::Aborted(format!("snapshot {name} is being deleted"))),
            };
            return Ok(CreateSnapshotResponse { snapshot: Some(self.snapshot_message(&existing)) });
        }
        let info = self.driver.existing_volume(source).await?;
        let mut snapshot_name = validate::data_plane_name(name, "snap", |_| false);
        while records.get::<SnapshotRecord>(&format!("{source}@{snapshot_name}"))?.is_some() {
            snapshot_name = validate::data_plane_name(name, "snap", |n| n == snapshot_name);
        }
        let record = SnapshotRecord {
            snapshot_id: format!("{source}@{snapshot_name}"),
            name: name.to_string(),
            source_volume_id: source.to_string(),
            size_bytes: info.capacity.unwrap_or(info.used_bytes),
            created_unix: 0,
            state: State::Creating,
        };
        let (record, _) = self.driver.create_snapshot(&record).await?;
        tracing::info!(name, snapshot = %record.snapshot_id, "cut snapshot");
        Ok(CreateSnapshotResponse { snapshot: Some(self.snapshot_message(&record)) })
    }

    async fn delete_snapshot(&self, req: DeleteSnapshotRequest) -> Result<DeleteSnapshotResponse> {
        let id = validate::id("snapshot_id", &req.snapshot_id)?;
        let _guard = self.driver.inflight.begin(&format!("snapshot:{id}"), &format!("snapshot {id}"))?;
        if let Some(record) = self.driver.records.get::<SnapshotRecord>(id)? {
            self.driver.delete_snapshot(&record).await?;
        }
        Ok(DeleteSnapshotResponse {})
    }

    fn ready_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        Ok(self.driver.records.all::<SnapshotRecord>()?.into_iter().filter(|s| s.state == State::Ready).collect())
    }

    async fn list_snapshots(&self, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse> {
        let snapshots: Vec<_> = self
            .ready_snapshots()?
            .into_iter()
            .filter(|s| req.snapshot_id.is_empty() || s.snapshot_id == req.snapshot_id)
            .filter(|s| req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id)
            .collect();
        let (snapshots, next_token) = page(snapshots, req.max_entries, &req.starting_token)?;
        let entries = snapshots
            .iter()
            .map(|s| list_snapshots_response::Entry { snapshot: Some(self.snapshot_message(s)) })
            .collect();
        Ok(ListSnapshotsResponse { entries, next_token })
    }

    async fn get_snapshot(&self, req: GetSnapshotRequest) -> Result<GetSnapshotResponse> {
        let id = validate::id("snapshot_id", &req.snapshot_id)?;
        let snapshot = self
            .ready_snapshots()?
            .into_iter()
            .find(|s| s.snapshot_id == id)
            .ok_or_else(|| Error::NotFound(format!("snapshot {id} does not exist")))?;
        Ok(GetSnapshotResponse { snapshot: Some(self.snapshot_message(&snapshot)) })
    }

    async fn expand(&self, req: ControllerExpandVolumeRequest) -> Result<ControllerExpandVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let range =
            req.capacity_range.as_ref().ok_or_else(|| Error::InvalidArgument("capacity_range is missing".into()))?;
        if req.volume_capability.is_some() {
            one_mode(req.volume_capability.as_ref(), Error::InvalidArgument)?;
        }
        let (pool_size, _) = self.driver.data.pool_space()?;
        let wanted = capacity_of(Some(range), pool_size)?.ok_or_else(|| {
            Error::InvalidArgument("capacity_range sets neither required_bytes nor limit_bytes".into())
        })?;
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        let capacity = expand_volume(&self.driver, id, wanted, range.limit_bytes).await?;
        Ok(ControllerExpandVolumeResponse { capacity_bytes: capacity as i64, node_expansion_required: false })
    }

    async fn get_volume(&self, req: ControllerGetVolumeRequest) -> Result<ControllerGetVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let record = self
            .driver
            .records
            .get::<VolumeRecord>(id)?
            .filter(|v| v.state == State::Ready)
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        let present = self.driver.existing_volume(id).await.is_ok();
        let (published_node_ids, condition) = self.status_parts(id, present)?;
        Ok(ControllerGetVolumeResponse {
            volume: Some(self.volume_message(&record, None)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids,
                volume_condition: Some(condition),
            }),
        })
    }
}

/// Grows volume `id` to `wanted` bytes (a volume that has as much already is left as it is);
/// the record follows. Shared by ControllerExpand and NodeExpand.
pub async fn expand_volume(driver: &Driver, id: &str, wanted: u64, limit: i64) -> Result<u64> {
    let info = driver.existing_volume(id).await?;
    if let Some(current) = info.capacity.filter(|c| *c >= wanted) {
        if limit > 0 && current > limit as u64 {
            return Err(Error::OutOfRange(format!(
                "volume {id} has {current} bytes already, more than limit_bytes {limit}"
            )));
        }
        return Ok(current);
    }
    let resized = driver.data.client().resize_volume(id, wanted).await?;
    if let Some(mut record) = driver.records.get::<VolumeRecord>(id)? {
        record.capacity = resized.capacity;
        driver.records.put(&record)?;
    }
    tracing::info!(volume = id, capacity = wanted, "expanded volume");
    Ok(resized.capacity.unwrap_or(wanted))
}

fn mode_name(mode: i32) -> &'static str {
    volume_capability::access_mode::Mode::try_from(mode).map(|m| m.as_str_name()).unwrap_or("an unknown mode")
}

impl From<(Vec<String>, VolumeCondition)> for ListVolumesStatus {
    fn from((published_node_ids, condition): (Vec<String>, VolumeCondition)) -> Self {
        ListVolumesStatus { published_node_ids, volume_condition: Some(condition) }
    }
}

type ListVolumesStatus = list_volumes_response::VolumeStatus;

fn capability(t: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })) }
}

#[tonic::async_trait]
impl ControllerService for Controller {
    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> Reply<CreateVolumeResponse> {
        Ok(Response::new(self.create_volume(r.into_inner()).await?))
    }

    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Reply<DeleteVolumeResponse> {
        Ok(Response::new(self.delete_volume(r.into_inner()).await?))
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Reply<ControllerPublishVolumeResponse> {
        Ok(Response::new(self.controller_publish(r.into_inner()).await?))
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Reply<ControllerUnpublishVolumeResponse> {
        Ok(Response::new(self.controller_unpublish(r.into_inner()).await?))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Reply<ValidateVolumeCapabilitiesResponse> {
        Ok(Response::new(self.validate_capabilities(r.into_inner()).await?))
    }

    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Reply<ListVolumesResponse> {
        Ok(Response::new(self.list_volumes(r.into_inner()).await?))
    }

    async fn get_capacity(&self, r: Request<GetCapacityRequest>) -> Reply<GetCapacityResponse> {
        Ok(Response::new(self.get_capacity(r.into_inner()).await?))
    }

    async fn controller_get_capabilities(
        &self,
        _r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Reply<ControllerGetCapabilitiesResponse> {
        use rpc::Type as T;
        let capabilities = [
            T::CreateDeleteVolume,
            T::PublishUnpublishVolume,
            T::ListVolumes,
            T::GetCapacity,
            T::CreateDeleteSnapshot,
            T::ListSnapshots,
            T::CloneVolume,
            T::PublishReadonly,
            T::ExpandVolume,
            T::ListVolumesPublishedNodes,
            T::VolumeCondition,
            T::GetVolume,
            T::SingleNodeMultiWriter,
            T::GetSnapshot,
        ]
        .into_iter()
        .map(capability)
        .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn create_snapshot(&self, r: Request<CreateSnapshotRequest>) -> Reply<CreateSnapshotResponse> {
        Ok(Response::new(self.create_snapshot(r.into_inner()).await?))
    }

    async fn delete_snapshot(&self, r: Request<DeleteSnapshotRequest>) -> Reply<DeleteSnapshotResponse> {
        Ok(Response::new(self.delete_snapshot(r.into_inner()).await?))
    }

    async fn list_snapshots(&self, r: Request<ListSnapshotsRequest>) -> Reply<ListSnapshotsResponse> {
        Ok(Response::new(self.list_snapshots(r.into_inner()).await?))
    }

    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Reply<GetSnapshotResponse> {
        Ok(Response::new(self.get_snapshot(r.into_inner()).await?))
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Reply<ControllerExpandVolumeResponse> {
        Ok(Response::new(self.expand(r.into_inner()).await?))
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Reply<ControllerGetVolumeResponse> {
        Ok(Response::new(self.get_volume(r.into_inner()).await?))
    }

    async fn controller_modify_volume(
        &self,
        _r: Request<ControllerModifyVolumeRequest>,
    ) -> Reply<ControllerModifyVolumeResponse> {
        Err(Error::Unimplemented("ControllerModifyVolume: volfs volumes have no mutable parameters".into()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_ranges_give_an_exact_capacity() {
        let range = |required, limit| CapacityRange { required_bytes: required, limit_bytes: limit };
        assert_eq!(capacity_of(None, 1 << 40).unwrap(), None);
        assert_eq!(capacity_of(Some(&range(0, 0)), 1 << 40).unwrap(), None);
        assert_eq!(capacity_of(Some(&range(100, 0)), 1 << 40).unwrap(), Some(100));
        assert_eq!(capacity_of(Some(&range(100, 200)), 1 << 40).unwrap(), Some(100));
        assert_eq!(capacity_of(Some(&range(0, 200)), 1 << 40).unwrap(), Some(200));
        assert!(matches!(capacity_of(Some(&range(300, 200)), 1 << 40), Err(Error::OutOfRange(_))));
        assert!(matches!(capacity_of(Some(&range(-1, 0)), 1 << 40), Err(Error::InvalidArgument(_))));
        assert!(
            matches!(capacity_of(Some(&range(2 << 40, 0)), 1 << 40), Err(Error::OutOfRange(m)) if m.contains("pool"))
        );
    }

    #[test]
    fn pages_follow_their_tokens() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(page(items.clone(), 0, "").unwrap(), (items.clone(), String::new()));
        assert_eq!(page(items.clone(), 2, "").unwrap(), (vec![0, 1], "2".to_string()));
        assert_eq!(page(items.clone(), 2, "2").unwrap(), (vec![2, 3], "4".to_string()));
        assert_eq!(page(items.clone(), 2, "4").unwrap(), (vec![4], String::new()));
        for bad in ["x", "6", "-1"] {
            assert!(matches!(page(items.clone(), 2, bad), Err(Error::Aborted(_))), "{bad}");
        }
        assert!(matches!(page(items, -1, ""), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn only_provisioner_parameters_are_taken() {
        let ok = HashMap::from([("csi.storage.k8s.io/pvc/name".to_string(), "data".to_string())]);
        assert_eq!(parameters(&ok).unwrap().len(), 1);
        let bad = HashMap::from([("replicas".to_string(), "3".to_string())]);
        assert!(matches!(parameters(&bad), Err(Error::InvalidArgument(m)) if m.contains("replicas")));
    }

    #[test]
    fn topology_key_is_a_valid_label_key() {
        let (prefix, name) = crate::capability::TOPOLOGY_KEY.split_once('/').unwrap();
        assert!(prefix.contains('.') && name.len() <= 63);
    }
}
