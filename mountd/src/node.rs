//! The CSI Node service: stage (a record: a FUSE volume needs no global mount), publish (a FUSE
//! mount of the volume, or of a subPath of it, at the target), access modes enforced between the
//! publications of a volume, inline ephemeral volumes, stats and expansion.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use volfs_api::ErrorKind;

use crate::capability::{self, one_mode, single_writer};
use crate::csi::v1::node_server::Node as NodeService;
use crate::csi::v1::node_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::v1::volume_capability::access_mode::Mode;
use crate::csi::v1::*;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::records::{pair_key, PublicationRecord, StageRecord, State, VolumeRecord};
use crate::validate;

/// `volume_context` keys a publish may carry: static PVs' attributes, inline volumes' size,
/// and what the kubelet adds itself.
const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
const SUBPATH_KEY: &str = "subPath";
const READONLY_KEY: &str = "readOnly";
const SIZE_KEY: &str = "size";

/// What a gRPC method answers.
type Reply<T> = std::result::Result<Response<T>, Status>;

pub struct Node {
    driver: Arc<Driver>,
}

impl Node {
    pub fn new(driver: Arc<Driver>) -> Self {
        Node { driver }
    }
}

/// The data-plane volume of an inline volume: the kubelet's id when it is a volume name, else a
/// name derived from it (the same every time, so unpublish finds it).
fn ephemeral_volume_id(csi_id: &str) -> String {
    if volfs_api::VolumeName::parse(csi_id).is_ok() && csi_id.len() <= 63 {
        return csi_id.to_string();
    }
    // FNV-1a: stable across runs and builds.
    let hash = csi_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("eph-{hash:016x}")
}

/// What a publish's `volume_context` asks for.
#[derive(Debug, PartialEq)]
struct Context {
    ephemeral: bool,
    subpath: Option<String>,
    readonly: bool,
    size: Option<u64>,
}

fn context(ctx: &HashMap<String, String>) -> Result<Context> {
    validate::map("volume_context", ctx)?;
    let flag = |key: &str| match ctx.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => {
            Err(Error::InvalidArgument(format!("volume_context {key}={other:?} must be \"true\" or \"false\"")))
        }
    };
    let ephemeral = flag(EPHEMERAL_KEY)?;
    for key in ctx.keys() {
        let known = key == SUBPATH_KEY
            || key == READONLY_KEY
            || (key == SIZE_KEY && ephemeral)
            || key.starts_with(KUBELET_PREFIX);
        if !known {
            return Err(Error::InvalidArgument(format!(
                "volume_context key {key:?} is not known (volfs takes subPath, readOnly, and size for inline volumes)"
            )));
        }
    }
    let subpath = ctx.get(SUBPATH_KEY).map(|s| validate::subpath("volume_context subPath", s)).transpose()?;
    let size = ctx
        .get(SIZE_KEY)
        .map(|s| {
            volfs_api::quantity::parse_size(s).map_err(|e| Error::InvalidArgument(format!("volume_context size: {e}")))
        })
        .transpose()?;
    Ok(Context { ephemeral, subpath, readonly: flag(READONLY_KEY)?, size })
}

/// The target path of a publish: absolute, and not a symlink or a non-directory if it exists
/// (a regular file only for a subPath, which may name one file of the volume).
fn target(field: &str, value: &str, file_ok: bool) -> Result<std::path::PathBuf> {
    let path = validate::path(field, value)?;
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(Error::InvalidArgument(format!("{field} {} is a symlink; it must be a directory", path.display())))
        }
        Ok(m) if !(m.is_dir() || file_ok && m.is_file()) => {
            Err(Error::InvalidArgument(format!("{field} {} is not a directory", path.display())))
        }
        _ => Ok(path),
    }
}

impl Node {
    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let staging = validate::path("staging_target_path", &req.staging_target_path)?;
        let mode = one_mode(req.volume_capability.as_ref(), Error::FailedPrecondition)?;
        context(&req.volume_context)?;
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        self.driver.existing_volume(id).await?;
        let record = StageRecord { volume_id: id.into(), staging_path: staging, mode: mode as i32 };
        match self.driver.records.get::<StageRecord>(id)? {
            Some(existing) if existing == record => {}
            Some(existing) => {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is staged at {} with other arguments",
                    existing.staging_path.display()
                )))
            }
            None => self.driver.records.put(&record)?,
        }
        Ok(NodeStageVolumeResponse {})
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        validate::path("staging_target_path", &req.staging_target_path)?;
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        if let Some(p) = self.driver.publications_of(id)?.first() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is still published at {}; unpublish it first",
                p.target.display()
            )));
        }
        self.driver.records.remove::<StageRecord>(id)?;
        Ok(NodeUnstageVolumeResponse {})
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        let csi_id = validate::id("volume_id", &req.volume_id)?;
        let ctx = context(&req.volume_context)?;
        let target = target("target_path", &req.target_path, ctx.subpath.is_some())?;
        let mode = one_mode(req.volume_capability.as_ref(), Error::FailedPrecondition)?;
        let volume_id = if ctx.ephemeral { ephemeral_volume_id(csi_id) } else { csi_id.to_string() };
        let _guard = self.driver.inflight.begin(&format!("volume:{volume_id}"), &format!("volume {csi_id}"))?;
        if ctx.ephemeral {
            self.create_ephemeral(csi_id, &volume_id, ctx.size).await?;
        } else {
            self.check_staged(csi_id, &req.staging_target_path)?;
            self.driver.existing_volume(csi_id).await?;
        }
        let readonly = req.readonly || ctx.readonly || mode == Mode::SingleNodeReaderOnly;
        let record = PublicationRecord {
            volume_id: volume_id.clone(),
            target,
            readonly,
            mode: mode as i32,
            subpath: ctx.subpath,
            state: State::Ready,
        };
        let others = self.driver.publications_of(&volume_id)?;
        if let Some(same) = others.iter().find(|p| p.target == record.target) {
            if (PublicationRecord { state: State::Ready, ..same.clone() }) != record {
                return Err(Error::AlreadyExists(format!(
                    "volume {csi_id} is published at {} with other arguments",
                    record.target.display()
                )));
            }
            if same.state == State::Ready {
                return Ok(NodePublishVolumeResponse {});
            }
        } else if let Some(why) = access_conflict(&record, &others) {
            return Err(Error::FailedPrecondition(format!("volume {csi_id}: {why}")));
        }
        self.driver.publish(&record).await?;
        Ok(NodePublishVolumeResponse {})
    }

    /// With STAGE_UNSTAGE advertised, a publish names where the volume was staged.
    fn check_staged(&self, id: &str, staging: &str) -> Result<()> {
        if staging.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "staging_target_path is missing: stage volume {id} (NodeStageVolume) first"
            )));
        }
        let staging = validate::path("staging_target_path", staging)?;
        match self.driver.records.get::<StageRecord>(id)? {
            Some(s) if s.staging_path == staging => Ok(()),
            _ => Err(Error::FailedPrecondition(format!("volume {id} is not staged at {}", staging.display()))),
        }
    }

    async fn create_ephemeral(&self, csi_id: &str, volume_id: &str, size: Option<u64>) -> Result<()> {
        if let Some(existing) = self.driver.records.get::<VolumeRecord>(volume_id)? {
            if !existing.ephemeral || existing.name != csi_id {
                return Err(Error::AlreadyExists(format!(
                    "volume {volume_id} exists and is not inline volume {csi_id}"
                )));
            }
            if existing.state == State::Ready {
                return Ok(());
            }
        } else if self.driver.volume_name_taken(volume_id).await? {
            return Err(Error::AlreadyExists(format!("a volume named {volume_id} exists already")));
        }
        let record = VolumeRecord {
            volume_id: volume_id.to_string(),
            name: csi_id.to_string(),
            capacity: size,
            parameters: Default::default(),
            origin: None,
            ephemeral: true,
            state: State::Creating,
        };
        self.driver.create_volume(&record).await?;
        tracing::info!(volume = volume_id, size = ?size, "created inline volume");
        Ok(())
    }

    async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<NodeUnpublishVolumeResponse> {
        let csi_id = validate::id("volume_id", &req.volume_id)?;
        let target = validate::path("target_path", &req.target_path)?;
        let target_key = target.to_string_lossy();
        let ephemeral_id = ephemeral_volume_id(csi_id);
        let _guard = self.driver.inflight.begin(&format!("volume:{csi_id}"), &format!("volume {csi_id}"))?;
        let records = &self.driver.records;
        let found = match records.get::<PublicationRecord>(&pair_key(csi_id, &target_key))? {
            Some(p) => Some(p),
            None => records.get::<PublicationRecord>(&pair_key(&ephemeral_id, &target_key))?,
        };
        let Some(publication) = found else {
            return Ok(NodeUnpublishVolumeResponse {});
        };
        self.driver.unpublish(&publication).await?;
        if let Some(volume) = records.get::<VolumeRecord>(&publication.volume_id)?.filter(|v| v.ephemeral) {
            if self.driver.publications_of(&volume.volume_id)?.is_empty() {
                self.driver.delete_volume(&volume).await?;
            }
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// Whether `path` is where volume `id` is published or staged.
    fn serves_at(&self, id: &str, path: &Path) -> Result<bool> {
        let published = self.driver.records.get::<PublicationRecord>(&pair_key(id, &path.to_string_lossy()))?.is_some()
            || self
                .driver
                .records
                .get::<PublicationRecord>(&pair_key(&ephemeral_volume_id(id), &path.to_string_lossy()))?
                .is_some();
        let staged = self.driver.records.get::<StageRecord>(id)?.is_some_and(|s| s.staging_path == path);
        Ok(published || staged)
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        // Any path where the volume is not published or staged is not found, malformed or not.
        let path = std::path::PathBuf::from(validate::text("volume_path", &req.volume_path, validate::MAX_PATH)?);
        if !self.serves_at(id, &path)? {
            return Err(Error::NotFound(format!("volume {id} is not published or staged at {}", path.display())));
        }
        let data_id = match self.driver.records.get::<PublicationRecord>(&pair_key(id, &path.to_string_lossy()))? {
            Some(_) => id.to_string(),
            None if self.driver.records.get::<StageRecord>(id)?.is_some() => id.to_string(),
            None => ephemeral_volume_id(id),
        };
        let info = match self.driver.data.client().inspect_volume(&data_id).await {
            Ok(info) => info,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("volume {id} does not exist")))
            }
            Err(e) => {
                // No figures to give, but a condition that says why.
                let condition =
                    VolumeCondition { abnormal: true, message: format!("the data plane does not answer: {e}") };
                return Ok(NodeGetVolumeStatsResponse { usage: vec![], volume_condition: Some(condition) });
            }
        };
        let condition = match std::fs::metadata(&path) {
            Ok(_) => VolumeCondition { abnormal: false, message: "mounted and answering".into() },
            Err(e) => {
                VolumeCondition { abnormal: true, message: format!("the mount at {} fails: {e}", path.display()) }
            }
        };
        let used = info.used_bytes;
        let total = info.capacity.unwrap_or(used + info.available_bytes);
        let usage = vec![
            VolumeUsage {
                available: info.available_bytes as i64,
                total: total as i64,
                used: used as i64,
                unit: volume_usage::Unit::Bytes as i32,
            },
            VolumeUsage {
                available: info.inodes_free as i64,
                total: (info.inodes + info.inodes_free) as i64,
                used: info.inodes as i64,
                unit: volume_usage::Unit::Inodes as i32,
            },
        ];
        Ok(NodeGetVolumeStatsResponse { usage, volume_condition: Some(condition) })
    }

    async fn expand(&self, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse> {
        let id = validate::id("volume_id", &req.volume_id)?;
        let path = std::path::PathBuf::from(validate::text("volume_path", &req.volume_path, validate::MAX_PATH)?);
        if req.volume_capability.is_some() {
            one_mode(req.volume_capability.as_ref(), Error::InvalidArgument)?;
        }
        let _guard = self.driver.inflight.begin(&format!("volume:{id}"), &format!("volume {id}"))?;
        let info = self.driver.existing_volume(id).await?;
        if !self.serves_at(id, &path)? {
            return Err(Error::NotFound(format!("volume {id} is not published or staged at {}", path.display())));
        }
        let capacity = match req.capacity_range.as_ref().filter(|r| r.required_bytes > 0 || r.limit_bytes > 0) {
            Some(range) => {
                let wanted = if range.required_bytes > 0 { range.required_bytes } else { range.limit_bytes };
                crate::controller::expand_volume(&self.driver, id, wanted as u64, range.limit_bytes).await?
            }
            None => info.capacity.unwrap_or(0),
        };
        Ok(NodeExpandVolumeResponse { capacity_bytes: capacity as i64 })
    }
}

/// Why publishing `new` next to `others` (other targets of the same volume) would break an
/// access mode: single-writer modes refuse a second writer, SINGLE_NODE_SINGLE_WRITER
/// (ReadWriteOncePod) any second publish.
fn access_conflict(new: &PublicationRecord, others: &[PublicationRecord]) -> Option<String> {
    let mode_of = |p: &PublicationRecord| Mode::try_from(p.mode).unwrap_or(Mode::Unknown);
    for other in others.iter().filter(|o| o.target != new.target && o.state != State::Deleting) {
        let (a, b) = (mode_of(new), mode_of(other));
        if a == Mode::SingleNodeSingleWriter || b == Mode::SingleNodeSingleWriter {
            return Some(format!(
                "it is published at {} and SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod) allows one publish",
                other.target.display()
            ));
        }
        if (single_writer(a) || single_writer(b)) && !new.readonly && !other.readonly {
            return Some(format!(
                "it is published read-write at {} and {} allows one writer",
                other.target.display(),
                if single_writer(a) { a.as_str_name() } else { b.as_str_name() }
            ));
        }
    }
    None
}

fn capability(t: rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })) }
}

#[tonic::async_trait]
impl NodeService for Node {
    async fn node_stage_volume(&self, r: Request<NodeStageVolumeRequest>) -> Reply<NodeStageVolumeResponse> {
        Ok(Response::new(self.stage(r.into_inner()).await?))
    }

    async fn node_unstage_volume(&self, r: Request<NodeUnstageVolumeRequest>) -> Reply<NodeUnstageVolumeResponse> {
        Ok(Response::new(self.unstage(r.into_inner()).await?))
    }

    async fn node_publish_volume(&self, r: Request<NodePublishVolumeRequest>) -> Reply<NodePublishVolumeResponse> {
        Ok(Response::new(self.publish(r.into_inner()).await?))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Reply<NodeUnpublishVolumeResponse> {
        Ok(Response::new(self.unpublish(r.into_inner()).await?))
    }

    async fn node_get_volume_stats(&self, r: Request<NodeGetVolumeStatsRequest>) -> Reply<NodeGetVolumeStatsResponse> {
        Ok(Response::new(self.stats(r.into_inner()).await?))
    }

    async fn node_expand_volume(&self, r: Request<NodeExpandVolumeRequest>) -> Reply<NodeExpandVolumeResponse> {
        Ok(Response::new(self.expand(r.into_inner()).await?))
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<NodeGetCapabilitiesRequest>,
    ) -> Reply<NodeGetCapabilitiesResponse> {
        use rpc::Type as T;
        let capabilities =
            [T::StageUnstageVolume, T::GetVolumeStats, T::ExpandVolume, T::VolumeCondition, T::SingleNodeMultiWriter]
                .into_iter()
                .map(capability)
                .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(&self, _r: Request<NodeGetInfoRequest>) -> Reply<NodeGetInfoResponse> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.driver.node_id.clone(),
            max_volumes_per_node: self.driver.max_volumes_per_node,
            accessible_topology: Some(capability::topology(&self.driver.node_id)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(target: &str, mode: Mode, readonly: bool) -> PublicationRecord {
        PublicationRecord {
            volume_id: "v".into(),
            target: target.into(),
            readonly,
            mode: mode as i32,
            subpath: None,
            state: State::Ready,
        }
    }

    #[test]
    fn single_writer_modes_refuse_a_second_writer() {
        let first = [publication("/a", Mode::SingleNodeWriter, false)];
        assert!(access_conflict(&publication("/b", Mode::SingleNodeWriter, false), &first).is_some());
        assert!(access_conflict(&publication("/b", Mode::SingleNodeWriter, true), &first).is_none());
        assert!(access_conflict(&publication("/a", Mode::SingleNodeWriter, false), &first).is_none());
        let multi = [publication("/a", Mode::SingleNodeMultiWriter, false)];
        assert!(access_conflict(&publication("/b", Mode::SingleNodeMultiWriter, false), &multi).is_none());
    }

    #[test]
    fn read_write_once_pod_refuses_any_second_publish() {
        let first = [publication("/a", Mode::SingleNodeSingleWriter, false)];
        let why = access_conflict(&publication("/b", Mode::SingleNodeSingleWriter, true), &first).unwrap();
        assert!(why.contains("ReadWriteOncePod") && why.contains("/a"), "{why}");
    }

    #[test]
    fn volume_context_is_checked_key_by_key() {
        let ctx = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let c =
            context(&ctx(&[("subPath", "a/b"), ("readOnly", "true"), ("csi.storage.k8s.io/pod.name", "p")])).unwrap();
        assert_eq!(c, Context { ephemeral: false, subpath: Some("a/b".into()), readonly: true, size: None });
        let c = context(&ctx(&[(EPHEMERAL_KEY, "true"), ("size", "64Mi")])).unwrap();
        assert_eq!((c.ephemeral, c.size), (true, Some(64 << 20)));
        for (bad, names) in [
            (ctx(&[("subPath", "../x")]), "subPath"),
            (ctx(&[("size", "1Gi")]), "size"),
            (ctx(&[(EPHEMERAL_KEY, "true"), ("size", "lots")]), "size"),
            (ctx(&[("readOnly", "yes")]), "readOnly"),
            (ctx(&[("replicas", "2")]), "replicas"),
        ] {
            let e = context(&bad).unwrap_err().to_string();
            assert!(e.contains(names), "{e}");
        }
    }

    #[test]
    fn inline_volume_ids_are_stable_volume_names() {
        let kubelet_id = format!("csi-{}", "ab".repeat(32));
        let id = ephemeral_volume_id(&kubelet_id);
        assert_eq!(id, ephemeral_volume_id(&kubelet_id));
        assert!(volfs_api::VolumeName::parse(&id).is_ok() && id.starts_with("eph-"), "{id}");
        assert_eq!(ephemeral_volume_id("short-id"), "short-id");
    }

    #[test]
    fn symlinked_or_special_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let fifo = dir.path().join("p");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(target("target_path", fifo.to_str().unwrap(), true)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert!(target("target_path", link.to_str().unwrap(), true).unwrap_err().to_string().contains("symlink"));
        assert!(target("target_path", dir.path().join("new").to_str().unwrap(), false).is_ok());
        assert!(target("target_path", file.to_str().unwrap(), false)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        // With a subPath, a regular file takes a mount of one file; the data plane checks the
        // kinds match.
        assert!(target("target_path", file.to_str().unwrap(), true).is_ok());
    }
}
