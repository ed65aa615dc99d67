//! Times the CSI calls a pod start and a pod stop make, against a running `mountd serve`:
//! CreateVolume + NodeStage + NodePublish until the mount answers, then NodeUnpublish +
//! NodeUnstage + DeleteVolume, with N of them at once. Prints one JSON object.
//!
//!   csibench SOCKET DIR CONCURRENCY COUNT

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mountd::csi::v1::controller_client::ControllerClient;
use mountd::csi::v1::node_client::NodeClient;
use mountd::csi::v1::volume_capability::access_mode::Mode;
use mountd::csi::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use mountd::csi::v1::*;
use tonic::transport::Channel;

fn cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        access_type: Some(AccessType::Mount(MountVolume::default())),
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// How long each call of one pod's volume took, in the order of `PHASES`.
type Phases = [Duration; 6];
const PHASES: [&str; 6] = ["create", "stage", "publish", "unpublish", "unstage", "delete"];

/// One pod's volume: up (provisioned, staged, published and answering), then down.
async fn one(channel: Channel, dir: PathBuf, n: usize) -> Result<Phases, tonic::Status> {
    let (mut controller, mut node) = (ControllerClient::new(channel.clone()), NodeClient::new(channel));
    let staging = dir.join(format!("s{n}"));
    let target = dir.join(format!("t{n}"));
    std::fs::create_dir_all(&staging).expect("staging dir");
    let mut phases = Phases::default();
    let mut at = Instant::now();
    let mut lap = |i: usize| {
        phases[i] = at.elapsed();
        at = Instant::now();
    };
    let volume = controller
        .create_volume(CreateVolumeRequest {
            name: format!("bench-{n}"),
            capacity_range: Some(CapacityRange { required_bytes: 64 << 20, limit_bytes: 0 }),
            volume_capabilities: vec![cap()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .expect("a volume");
    lap(0);
    let id = volume.volume_id;
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: path(&staging),
        volume_capability: Some(cap()),
        ..Default::default()
    })
    .await?;
    lap(1);
    node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: path(&staging),
        target_path: path(&target),
        volume_capability: Some(cap()),
        ..Default::default()
    })
    .await?;
    std::fs::write(target.join("ready"), b"usable").expect("the published volume answers");
    lap(2);
    node.node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: id.clone(), target_path: path(&target) })
        .await?;
    lap(3);
    node.node_unstage_volume(NodeUnstageVolumeRequest { volume_id: id.clone(), staging_target_path: path(&staging) })
        .await?;
    lap(4);
    controller.delete_volume(DeleteVolumeRequest { volume_id: id, secrets: Default::default() }).await?;
    lap(5);
    Ok(phases)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, dir, concurrency, count] = &args[..] else {
        eprintln!("usage: csibench SOCKET DIR CONCURRENCY COUNT");
        std::process::exit(2);
    };
    let (concurrency, count): (usize, usize) =
        (concurrency.parse().expect("CONCURRENCY"), count.parse().expect("COUNT"));
    let channel = mountd::client::connect(Path::new(socket)).await.expect("connecting to mountd");
    let mut runs: Vec<Phases> = Vec::new();
    let mut next = 0;
    while next < count {
        let batch: Vec<_> = (next..count.min(next + concurrency))
            .map(|n| tokio::spawn(one(channel.clone(), PathBuf::from(dir), n)))
            .collect();
        next += batch.len();
        for task in batch {
            runs.push(task.await.expect("task").expect("CSI call"));
        }
    }
    let summary = |pick: &dyn Fn(&Phases) -> Duration| {
        let mut d: Vec<Duration> = runs.iter().map(pick).collect();
        d.sort();
        format!("{{\"p50_ms\": {:.1}, \"p95_ms\": {:.1}}}", percentile(&d, 0.5), percentile(&d, 0.95))
    };
    let mut fields = vec![
        format!("\"concurrency\": {concurrency}"),
        format!("\"count\": {count}"),
        format!("\"up\": {}", summary(&|p| p[..3].iter().sum())),
        format!("\"down\": {}", summary(&|p| p[3..].iter().sum())),
    ];
    for (i, name) in PHASES.iter().enumerate() {
        fields.push(format!("\"{name}\": {}", summary(&|p| p[i])));
    }
    println!("{{{}}}", fields.join(", "));
}
