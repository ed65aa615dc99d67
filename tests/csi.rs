//! mountd's CSI services driven by a gRPC client as the kubelet and the sidecars drive them:
//! every RPC, idempotent repeats, the spec's error codes, pagination, and the whole flow on real
//! FUSE mounts, with mountd killed in the middle.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::mountd::Mountd;
use mountd::csi::v1::controller_client::ControllerClient;
use mountd::csi::v1::identity_client::IdentityClient;
use mountd::csi::v1::node_client::NodeClient;
use mountd::csi::v1::volume_capability::access_mode::Mode;
use mountd::csi::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use mountd::csi::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use mountd::csi::v1::*;
use tonic::transport::Channel;
use tonic::Code;

const MIB: i64 = 1 << 20;

struct Csi {
    mountd: Mountd,
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

impl Csi {
    async fn start() -> Self {
        let mountd = tokio::task::spawn_blocking(Mountd::start).await.unwrap();
        let (identity, controller, node) = clients(&mountd.csi_socket).await;
        Csi { mountd, identity, controller, node }
    }

    /// kill -9 of mountd, then a new one on the same state dir; the clients reconnect.
    async fn kill_and_restart(&mut self) {
        self.mountd.kill();
        self.mountd.restart();
        (self.identity, self.controller, self.node) = clients(&self.mountd.csi_socket).await;
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.mountd.pool.root().join(name)
    }

    async fn create(&mut self, name: &str, bytes: i64) -> Volume {
        let req = create_request(name, bytes, Mode::SingleNodeWriter);
        self.controller.create_volume(req).await.expect("CreateVolume").into_inner().volume.unwrap()
    }

    /// ControllerPublish, NodeStage and NodePublish at `target`, as the kubelet does for a pod.
    async fn attach_and_mount(&mut self, volume_id: &str, target: &Path, mode: Mode, readonly: bool) {
        let node_id = self.mountd.node_id.clone();
        self.controller
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: volume_id.into(),
                node_id,
                volume_capability: Some(cap(mode)),
                readonly,
                ..Default::default()
            })
            .await
            .expect("ControllerPublishVolume");
        let staging = self.staging(volume_id);
        self.node.node_stage_volume(stage_request(volume_id, &staging, mode)).await.expect("NodeStageVolume");
        let req = publish_request(volume_id, &staging, target, mode, readonly);
        self.node.node_publish_volume(req).await.expect("NodePublishVolume");
    }

    fn staging(&self, volume_id: &str) -> PathBuf {
        let dir = self.dir(&format!("staging-{volume_id}"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn unmount_and_detach(&mut self, volume_id: &str, target: &Path) {
        let unpublish = NodeUnpublishVolumeRequest { volume_id: volume_id.into(), target_path: path_str(target) };
        self.node.node_unpublish_volume(unpublish).await.expect("NodeUnpublishVolume");
        let staging = self.staging(volume_id);
        let unstage = NodeUnstageVolumeRequest { volume_id: volume_id.into(), staging_target_path: path_str(&staging) };
        self.node.node_unstage_volume(unstage).await.expect("NodeUnstageVolume");
        let req = ControllerUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: self.mountd.node_id.clone(),
            ..Default::default()
        };
        self.controller.controller_unpublish_volume(req).await.expect("ControllerUnpublishVolume");
    }

    fn data_plane_volumes(&self) -> Vec<String> {
        self.mountd.pool.volume_names()
    }
}

async fn clients(socket: &Path) -> (IdentityClient<Channel>, ControllerClient<Channel>, NodeClient<Channel>) {
    let channel = mountd::client::connect(socket).await.expect("connecting to mountd");
    (IdentityClient::new(channel.clone()), ControllerClient::new(channel.clone()), NodeClient::new(channel))
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

fn cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

fn create_request(name: &str, bytes: i64, mode: Mode) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![cap(mode)],
        ..Default::default()
    }
}

fn stage_request(volume_id: &str, staging: &Path, mode: Mode) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: path_str(staging),
        volume_capability: Some(cap(mode)),
        ..Default::default()
    }
}

fn publish_request(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    mode: Mode,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: path_str(staging),
        target_path: path_str(target),
        volume_capability: Some(cap(mode)),
        readonly,
        ..Default::default()
    }
}

/// The code of a failed call, and its message must name `names`.
fn code_naming<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, names: &[&str]) -> Code {
    let status = r.expect_err("the call must fail");
    for name in names {
        assert!(status.message().contains(name), "{:?}: {:?} does not name {name:?}", status.code(), status.message());
    }
    status.code()
}

fn statvfs_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path_str(path)).unwrap();
    // SAFETY: a valid C string and a zeroed out-struct the call fills.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0, "statvfs {}", path.display());
        st.f_blocks * st.f_frsize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_names_the_driver_and_its_capabilities() {
    let mut csi = Csi::start().await;
    let info = csi.identity.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "csi.volfs.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = csi.identity.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(caps.capabilities.len(), 3, "{caps:?}");
    let probe = csi.identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let info = csi.node.node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.node_id, "node-1");
    let segments = info.accessible_topology.unwrap().segments;
    assert_eq!(segments.get("topology.volfs.io/node").map(String::as_str), Some("node-1"));
    let node_caps = csi.node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(node_caps.capabilities.len(), 5);
    let ctl =
        csi.controller.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await.unwrap().into_inner();
    assert!(ctl.capabilities.len() >= 13, "{ctl:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_is_idempotent_and_refuses_what_it_cannot_honour() {
    let mut csi = Csi::start().await;
    let first = csi.create("pvc-a", 64 * MIB).await;
    assert_eq!(first.capacity_bytes, 64 * MIB);
    assert_eq!(first.accessible_topology[0].segments["topology.volfs.io/node"], "node-1");
    let again = csi.create("pvc-a", 64 * MIB).await;
    assert_eq!(again.volume_id, first.volume_id);
    assert_eq!(csi.data_plane_volumes(), vec![first.volume_id.clone()]);

    let c = &mut csi.controller;
    let mut other_size = create_request("pvc-a", 128 * MIB, Mode::SingleNodeWriter);
    assert_eq!(code_naming(c.create_volume(other_size.clone()).await, &["pvc-a"]), Code::AlreadyExists);
    other_size.name = String::new();
    assert_eq!(code_naming(c.create_volume(other_size).await, &["name"]), Code::InvalidArgument);
    let mut no_caps = create_request("pvc-b", MIB, Mode::SingleNodeWriter);
    no_caps.volume_capabilities.clear();
    assert_eq!(code_naming(c.create_volume(no_caps).await, &["volume_capabilities"]), Code::InvalidArgument);
    let multi = create_request("pvc-b", MIB, Mode::MultiNodeMultiWriter);
    assert_eq!(
        code_naming(c.create_volume(multi).await, &["MULTI_NODE_MULTI_WRITER", "one node"]),
        Code::InvalidArgument
    );
    let mut block = create_request("pvc-b", MIB, Mode::SingleNodeWriter);
    block.volume_capabilities[0].access_type = Some(AccessType::Block(BlockVolume {}));
    assert_eq!(code_naming(c.create_volume(block).await, &["block"]), Code::InvalidArgument);
    let mut inverted = create_request("pvc-b", 2 * MIB, Mode::SingleNodeWriter);
    inverted.capacity_range = Some(CapacityRange { required_bytes: 2 * MIB, limit_bytes: MIB });
    assert_eq!(code_naming(c.create_volume(inverted).await, &["limit_bytes"]), Code::OutOfRange);
    let mut params = create_request("pvc-b", MIB, Mode::SingleNodeWriter);
    params.parameters.insert("replicas".into(), "3".into());
    assert_eq!(code_naming(c.create_volume(params).await, &["replicas"]), Code::InvalidArgument);
    let mut elsewhere = create_request("pvc-b", MIB, Mode::SingleNodeWriter);
    let node2 = Topology { segments: HashMap::from([("topology.volfs.io/node".to_string(), "node-2".to_string())]) };
    elsewhere.accessibility_requirements = Some(TopologyRequirement { requisite: vec![node2], preferred: vec![] });
    assert_eq!(code_naming(c.create_volume(elsewhere).await, &["node-1"]), Code::ResourceExhausted);
    let mut from_nothing = create_request("pvc-b", MIB, Mode::SingleNodeWriter);
    from_nothing.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: "nope@nope".into() })),
    });
    assert_eq!(code_naming(c.create_volume(from_nothing.clone()).await, &["nope@nope"]), Code::NotFound);
    from_nothing.volume_content_source =
        Some(VolumeContentSource { r#type: Some(SourceType::Volume(VolumeSource { volume_id: "missing".into() })) });
    assert_eq!(code_naming(c.create_volume(from_nothing).await, &["missing"]), Code::NotFound);
    // None of the refused requests made a volume.
    assert_eq!(csi.data_plane_volumes(), vec![first.volume_id.clone()]);

    let delete = DeleteVolumeRequest { volume_id: first.volume_id.clone(), secrets: HashMap::new() };
    csi.controller.delete_volume(delete.clone()).await.expect("DeleteVolume");
    csi.controller.delete_volume(delete).await.expect("DeleteVolume again is OK");
    let unknown = DeleteVolumeRequest { volume_id: "never-made".into(), secrets: HashMap::new() };
    csi.controller.delete_volume(unknown).await.expect("DeleteVolume of an unknown id is OK");
    assert!(csi.data_plane_volumes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_publish_attaches_to_this_node_only() {
    let mut csi = Csi::start().await;
    let v = csi.create("pvc-att", 16 * MIB).await;
    let publish = |node: &str, readonly: bool| ControllerPublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: node.into(),
        volume_capability: Some(cap(Mode::SingleNodeWriter)),
        readonly,
        ..Default::default()
    };
    let c = &mut csi.controller;
    c.controller_publish_volume(publish("node-1", false)).await.expect("publish");
    c.controller_publish_volume(publish("node-1", false)).await.expect("publish again is OK");
    assert_eq!(code_naming(c.controller_publish_volume(publish("node-1", true)).await, &[]), Code::AlreadyExists);
    let busy = c.controller_publish_volume(publish("node-2", false)).await;
    assert_eq!(code_naming(busy, &["node-1", "node-2"]), Code::FailedPrecondition);
    let get = c.controller_get_volume(ControllerGetVolumeRequest { volume_id: v.volume_id.clone() }).await.unwrap();
    assert_eq!(get.into_inner().status.unwrap().published_node_ids, vec!["node-1".to_string()]);
    let delete = DeleteVolumeRequest { volume_id: v.volume_id.clone(), secrets: HashMap::new() };
    assert_eq!(code_naming(c.delete_volume(delete.clone()).await, &["node-1"]), Code::FailedPrecondition);
    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "node-1".into(),
        ..Default::default()
    };
    c.controller_unpublish_volume(unpublish.clone()).await.expect("unpublish");
    c.controller_unpublish_volume(unpublish).await.expect("unpublish again is OK");
    assert_eq!(code_naming(c.controller_publish_volume(publish("node-2", false)).await, &["node-2"]), Code::NotFound);
    let mut unknown = publish("node-1", false);
    unknown.volume_id = "nope".into();
    assert_eq!(code_naming(c.controller_publish_volume(unknown).await, &["nope"]), Code::NotFound);
    c.delete_volume(delete).await.expect("delete once detached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_tokens() {
    let mut csi = Csi::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(csi.create(&format!("pvc-{n}"), MIB).await.volume_id);
    }
    let snap = |n: usize| CreateSnapshotRequest {
        source_volume_id: ids[0].clone(),
        name: format!("snap-{n}"),
        ..Default::default()
    };
    for n in 0..3 {
        csi.controller.create_snapshot(snap(n)).await.expect("CreateSnapshot");
    }
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let req = ListVolumesRequest { max_entries: 2, starting_token: token.clone() };
        let page = csi.controller.list_volumes(req).await.unwrap().into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.into_iter().map(|e| e.volume.unwrap().volume_id));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let bad = ListVolumesRequest { max_entries: 2, starting_token: "garbage".into() };
    assert_eq!(code_naming(csi.controller.list_volumes(bad).await, &["garbage"]), Code::Aborted);
    let first = ListSnapshotsRequest { max_entries: 2, ..Default::default() };
    let page = csi.controller.list_snapshots(first).await.unwrap().into_inner();
    assert_eq!((page.entries.len(), page.next_token.as_str()), (2, "2"));
    let rest = ListSnapshotsRequest { max_entries: 2, starting_token: page.next_token, ..Default::default() };
    let page = csi.controller.list_snapshots(rest).await.unwrap().into_inner();
    assert_eq!((page.entries.len(), page.next_token.as_str()), (1, ""));
    let bad = ListSnapshotsRequest { starting_token: "99".into(), ..Default::default() };
    assert_eq!(code_naming(csi.controller.list_snapshots(bad).await, &["99"]), Code::Aborted);
    let one = ListSnapshotsRequest { snapshot_id: "nope@nope".into(), ..Default::default() };
    assert!(csi.controller.list_snapshots(one).await.unwrap().into_inner().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_on_real_mounts_survives_a_kill_of_mountd() {
    let mut csi = Csi::start().await;
    let v = csi.create("pvc-flow", 64 * MIB).await;
    let id = v.volume_id.clone();
    let target = csi.dir("pod-a");
    csi.attach_and_mount(&id, &target, Mode::SingleNodeWriter, false).await;
    fs::write(target.join("before"), b"written before the snapshot").unwrap();
    fs::write(target.join("blob"), vec![7u8; 4 << 20]).unwrap();

    let stats =
        NodeGetVolumeStatsRequest { volume_id: id.clone(), volume_path: path_str(&target), ..Default::default() };
    let got = csi.node.node_get_volume_stats(stats.clone()).await.unwrap().into_inner();
    let bytes = &got.usage[0];
    assert_eq!(bytes.total, 64 * MIB);
    assert!(bytes.used >= 4 * MIB && bytes.available <= 60 * MIB, "{bytes:?}");
    assert!(got.usage[1].used >= 3, "{:?}", got.usage[1]);
    assert!(!got.volume_condition.unwrap().abnormal);

    // A crash of mountd touches no mount and loses no record.
    csi.kill_and_restart().await;
    assert_eq!(fs::read(target.join("before")).unwrap(), b"written before the snapshot");
    let node_id = csi.mountd.node_id.clone();
    let req = publish_request(&id, &csi.staging(&id), &target, Mode::SingleNodeWriter, false);
    csi.node.node_publish_volume(req).await.expect("NodePublish again after the restart is OK");

    let expand = ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: Some(CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
        ..Default::default()
    };
    let grown = csi.controller.controller_expand_volume(expand).await.unwrap().into_inner();
    assert_eq!((grown.capacity_bytes, grown.node_expansion_required), (128 * MIB, false));
    assert_eq!(statvfs_bytes(&target), 128 << 20, "df shows the new size at once");
    let node_expand = NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: path_str(&target),
        capacity_range: Some(CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
        ..Default::default()
    };
    assert_eq!(csi.node.node_expand_volume(node_expand).await.unwrap().into_inner().capacity_bytes, 128 * MIB);

    let snap_req =
        CreateSnapshotRequest { source_volume_id: id.clone(), name: "snap-flow".into(), ..Default::default() };
    let snap = csi.controller.create_snapshot(snap_req.clone()).await.unwrap().into_inner().snapshot.unwrap();
    assert!(snap.ready_to_use && snap.creation_time.is_some());
    assert_eq!(snap.size_bytes, 128 * MIB);
    let again = csi.controller.create_snapshot(snap_req).await.unwrap().into_inner().snapshot.unwrap();
    assert_eq!(again.snapshot_id, snap.snapshot_id);
    fs::write(target.join("after"), b"written after the snapshot").unwrap();

    let mut restore = create_request("pvc-restored", 128 * MIB, Mode::SingleNodeWriter);
    restore.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource { snapshot_id: snap.snapshot_id.clone() })),
    });
    let mut too_small = restore.clone();
    too_small.capacity_range = Some(CapacityRange { required_bytes: MIB, limit_bytes: 0 });
    assert_eq!(code_naming(csi.controller.create_volume(too_small).await, &[]), Code::OutOfRange);
    let restored = csi.controller.create_volume(restore).await.unwrap().into_inner().volume.unwrap();
    let target_b = csi.dir("pod-b");
    csi.attach_and_mount(&restored.volume_id, &target_b, Mode::SingleNodeWriter, false).await;
    assert_eq!(fs::read(target_b.join("before")).unwrap(), b"written before the snapshot");
    assert!(!target_b.join("after").exists(), "the restore holds what the snapshot held");
    assert_eq!(fs::read(target_b.join("blob")).unwrap(), vec![7u8; 4 << 20]);

    csi.unmount_and_detach(&restored.volume_id, &target_b).await;
    csi.unmount_and_detach(&id, &target).await;
    assert!(!target.exists(), "NodeUnpublish removes the target");
    let delete_snap = DeleteSnapshotRequest { snapshot_id: snap.snapshot_id, secrets: HashMap::new() };
    csi.controller.delete_snapshot(delete_snap.clone()).await.unwrap();
    csi.controller.delete_snapshot(delete_snap).await.expect("DeleteSnapshot again is OK");
    for volume_id in [id, restored.volume_id] {
        csi.controller.delete_volume(DeleteVolumeRequest { volume_id, secrets: HashMap::new() }).await.unwrap();
    }
    assert!(csi.data_plane_volumes().is_empty());
    let _ = node_id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_modes_are_enforced_between_publications() {
    let mut csi = Csi::start().await;
    let v = csi.create("pvc-rwo", 16 * MIB).await;
    let id = v.volume_id.clone();
    let (a, b, c) = (csi.dir("a"), csi.dir("b"), csi.dir("c"));
    csi.attach_and_mount(&id, &a, Mode::SingleNodeWriter, false).await;
    let staging = csi.staging(&id);
    let second_writer = publish_request(&id, &staging, &b, Mode::SingleNodeWriter, false);
    assert_eq!(
        code_naming(csi.node.node_publish_volume(second_writer).await, &["one writer"]),
        Code::FailedPrecondition
    );
    let reader = publish_request(&id, &staging, &b, Mode::SingleNodeWriter, true);
    csi.node.node_publish_volume(reader).await.expect("a read-only second publish");
    fs::write(a.join("f"), b"x").unwrap();
    let err = fs::write(b.join("g"), b"y").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "the read-only publish is read-only");
    let other_args = publish_request(&id, &staging, &a, Mode::SingleNodeWriter, true);
    assert_eq!(code_naming(csi.node.node_publish_volume(other_args).await, &[]), Code::AlreadyExists);

    let rwop = csi.create("pvc-rwop", 16 * MIB).await.volume_id;
    csi.attach_and_mount(&rwop, &c, Mode::SingleNodeSingleWriter, false).await;
    let staging = csi.staging(&rwop);
    let second = publish_request(&rwop, &staging, &csi.dir("d"), Mode::SingleNodeSingleWriter, true);
    assert_eq!(
        code_naming(csi.node.node_publish_volume(second).await, &["ReadWriteOncePod"]),
        Code::FailedPrecondition
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_volume_has_a_hard_size_and_goes_at_unpublish() {
    let mut csi = Csi::start().await;
    let target = csi.dir("inline");
    let kubelet_id = format!("csi-{}", "0123456789abcdef".repeat(4));
    let req = NodePublishVolumeRequest {
        volume_id: kubelet_id.clone(),
        target_path: path_str(&target),
        volume_capability: Some(cap(Mode::SingleNodeWriter)),
        volume_context: HashMap::from([
            ("csi.storage.k8s.io/ephemeral".to_string(), "true".to_string()),
            ("csi.storage.k8s.io/pod.name".to_string(), "web".to_string()),
            ("size".to_string(), "8Mi".to_string()),
        ]),
        ..Default::default()
    };
    csi.node.node_publish_volume(req.clone()).await.expect("publish an inline volume");
    csi.node.node_publish_volume(req).await.expect("publish it again");
    assert_eq!(csi.data_plane_volumes().len(), 1);
    let err = fs::write(target.join("big"), vec![1u8; 10 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "8Mi is a hard limit");
    let unpublish = NodeUnpublishVolumeRequest { volume_id: kubelet_id, target_path: path_str(&target) };
    csi.node.node_unpublish_volume(unpublish.clone()).await.unwrap();
    csi.node.node_unpublish_volume(unpublish).await.expect("unpublish again is OK");
    assert!(csi.data_plane_volumes().is_empty(), "the inline volume is deleted with its pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_volume_publishes_a_subpath_read_only() {
    let mut csi = Csi::start().await;
    let pool = &csi.mountd.pool;
    pool.create_volume("static", Some("64Mi"));
    {
        let m = pool.mount("static", common::MountOpts::default());
        fs::create_dir_all(m.join("data/inner")).unwrap();
        fs::write(m.join("data/inner/f"), b"static").unwrap();
        fs::write(m.join("outside"), b"not shown").unwrap();
    }
    let staging = csi.staging("static");
    csi.node.node_stage_volume(stage_request("static", &staging, Mode::SingleNodeReaderOnly)).await.unwrap();
    let target = csi.dir("static-view");
    let mut req = publish_request("static", &staging, &target, Mode::SingleNodeReaderOnly, false);
    req.volume_context =
        HashMap::from([("subPath".to_string(), "data".to_string()), ("readOnly".to_string(), "true".to_string())]);
    csi.node.node_publish_volume(req).await.expect("publish a subPath view");
    assert_eq!(fs::read(target.join("inner/f")).unwrap(), b"static");
    assert!(!target.join("outside").exists(), "only the subPath is shown");
    assert_eq!(fs::write(target.join("new"), b"x").unwrap_err().raw_os_error(), Some(libc::EROFS));
    let unpublish = NodeUnpublishVolumeRequest { volume_id: "static".into(), target_path: path_str(&target) };
    csi.node.node_unpublish_volume(unpublish).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_requests_get_the_spec_code_and_change_nothing() {
    let mut csi = Csi::start().await;
    let id = csi.create("pvc-bad", 16 * MIB).await.volume_id;
    let staging = csi.staging(&id);
    let file = csi.dir("a-file");
    let n = &mut csi.node;
    fs::write(&file, b"").unwrap();
    let relative = publish_request(&id, &staging, Path::new("relative/target"), Mode::SingleNodeWriter, false);
    assert_eq!(code_naming(n.node_publish_volume(relative).await, &["target_path"]), Code::InvalidArgument);
    let not_dir = publish_request(&id, &staging, &file, Mode::SingleNodeWriter, false);
    assert_eq!(code_naming(n.node_publish_volume(not_dir).await, &["not a directory"]), Code::InvalidArgument);
    let target = staging.with_file_name("target");
    let unstaged = publish_request(&id, &staging, &target, Mode::SingleNodeWriter, false);
    assert_eq!(code_naming(n.node_publish_volume(unstaged).await, &["not staged"]), Code::FailedPrecondition);
    let mut no_staging = publish_request(&id, &staging, &target, Mode::SingleNodeWriter, false);
    no_staging.staging_target_path = String::new();
    assert_eq!(
        code_naming(n.node_publish_volume(no_staging).await, &["staging_target_path"]),
        Code::FailedPrecondition
    );
    let unknown = stage_request("nope", &staging, Mode::SingleNodeWriter);
    assert_eq!(code_naming(n.node_stage_volume(unknown).await, &["nope"]), Code::NotFound);
    let mut no_cap = stage_request(&id, &staging, Mode::SingleNodeWriter);
    no_cap.volume_capability = None;
    assert_eq!(code_naming(n.node_stage_volume(no_cap).await, &["volume_capability"]), Code::InvalidArgument);
    n.node_stage_volume(stage_request(&id, &staging, Mode::SingleNodeWriter)).await.unwrap();
    let other_mode = stage_request(&id, &staging, Mode::SingleNodeReaderOnly);
    assert_eq!(code_naming(n.node_stage_volume(other_mode).await, &[]), Code::AlreadyExists);
    let stats =
        NodeGetVolumeStatsRequest { volume_id: id.clone(), volume_path: path_str(&target), ..Default::default() };
    assert_eq!(code_naming(n.node_get_volume_stats(stats).await, &["not published"]), Code::NotFound);
    let expand =
        NodeExpandVolumeRequest { volume_id: "nope".into(), volume_path: path_str(&target), ..Default::default() };
    assert_eq!(code_naming(n.node_expand_volume(expand).await, &["nope"]), Code::NotFound);
    let long = CreateVolumeRequest { name: "x".repeat(200), ..create_request("", MIB, Mode::SingleNodeWriter) };
    assert_eq!(code_naming(csi.controller.create_volume(long).await, &["name", "200 bytes"]), Code::InvalidArgument);
    let no_range = ControllerExpandVolumeRequest { volume_id: id.clone(), ..Default::default() };
    assert_eq!(
        code_naming(csi.controller.controller_expand_volume(no_range).await, &["capacity_range"]),
        Code::InvalidArgument
    );
    assert!(!target.exists(), "a refused publish makes no target");
    assert_eq!(csi.data_plane_volumes(), vec![id]);
    assert_eq!(fs::metadata(&csi.mountd.state_dir).unwrap().permissions().mode() & 0o777, 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_plane_shows_in_the_volume_condition_and_comes_back() {
    let mut csi = Csi::start().await;
    let id = csi.create("pvc-cond", 16 * MIB).await.volume_id;
    let target = csi.dir("cond");
    csi.attach_and_mount(&id, &target, Mode::SingleNodeWriter, false).await;
    fs::write(target.join("f"), b"kept").unwrap();
    let pid = csi.mountd.pool.daemon_pid().expect("a data plane serves the pool");
    // SAFETY: signals the data plane this test's mountd started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(common::wait_pid_exit(pid, std::time::Duration::from_secs(10)));
    let stats =
        NodeGetVolumeStatsRequest { volume_id: id.clone(), volume_path: path_str(&target), ..Default::default() };
    let got = csi.node.node_get_volume_stats(stats.clone()).await.unwrap().into_inner();
    assert!(got.volume_condition.unwrap().abnormal, "a dead data plane is abnormal");
    // mountd starts a data plane again and mounts what its records say is published.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = csi.node.node_get_volume_stats(stats.clone()).await.unwrap().into_inner();
        if !got.volume_condition.as_ref().unwrap().abnormal {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the volume did not come back: {got:?}\n{}", csi.mountd.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(fs::read(target.join("f")).unwrap(), b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_requests_never_reach_the_log() {
    let mut csi = Csi::start().await;
    const SECRET: &str = "s3cr3t-value-never-logged";
    let secrets = HashMap::from([("password".to_string(), SECRET.to_string())]);
    let mut create = create_request("pvc-secret", 16 * MIB, Mode::SingleNodeWriter);
    create.secrets = secrets.clone();
    let id = csi.controller.create_volume(create).await.unwrap().into_inner().volume.unwrap().volume_id;
    let staging = csi.staging(&id);
    let mut stage = stage_request(&id, &staging, Mode::SingleNodeWriter);
    stage.secrets = secrets.clone();
    csi.node.node_stage_volume(stage).await.unwrap();
    let target = csi.dir("secret-target");
    let mut publish = publish_request(&id, &staging, &target, Mode::SingleNodeWriter, false);
    publish.secrets = secrets.clone();
    csi.node.node_publish_volume(publish).await.unwrap();
    let mut refused = create_request("pvc-secret", 32 * MIB, Mode::SingleNodeWriter);
    refused.secrets = secrets;
    assert_eq!(code_naming(csi.controller.create_volume(refused).await, &[]), Code::AlreadyExists);
    let log = csi.mountd.log();
    assert!(log.contains("published"), "the log is written at debug level: {log}");
    assert!(!log.contains(SECRET), "a secret reached mountd's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_stop_of_mountd_leaves_mounts_served() {
    let mut csi = Csi::start().await;
    let id = csi.create("pvc-stop", 16 * MIB).await.volume_id;
    let target = csi.dir("stop");
    csi.attach_and_mount(&id, &target, Mode::SingleNodeWriter, false).await;
    fs::write(target.join("f"), b"before").unwrap();
    csi.mountd.stop();
    assert!(!csi.mountd.csi_socket.exists(), "SIGTERM removes the CSI socket");
    fs::write(target.join("g"), b"while mountd is down").unwrap();
    assert_eq!(fs::read(target.join("f")).unwrap(), b"before");
    csi.mountd.restart();
    (csi.identity, csi.controller, csi.node) = clients(&csi.mountd.csi_socket).await;
    assert_eq!(fs::read(target.join("g")).unwrap(), b"while mountd is down");
    csi.unmount_and_detach(&id, &target).await;
    assert!(!common::is_mountpoint(&target) && !target.exists());
}
