//! The data plane's observability, through the kernel: `volfs serve --metrics-addr` scraped
//! during a known workload (each family moves as the workload says; the exposition parses with
//! Prometheus' own OpenMetrics parser), `volfs stats`, and `volfs top` rendered in tmux.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{MountOpts, TestPool, VOLFS};

/// `volfs serve --metrics-addr 127.0.0.1:0` on the pool; the daemon stops with the pool.
struct Daemon<'a> {
    pool: &'a TestPool,
    child: Child,
    metrics: String,
}

impl<'a> Daemon<'a> {
    fn start(pool: &'a TestPool) -> Daemon<'a> {
        let log = pool.root().join("serve.log");
        let mut cmd = pool.command(&["serve", "--metrics-addr", "127.0.0.1:0"]);
        cmd.stderr(fs::File::create(&log).expect("log file")).stdout(Stdio::null());
        let mut daemon = Daemon { pool, child: cmd.spawn().expect("starting volfs serve"), metrics: String::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let addr = text.split("metrics at http://").nth(1).and_then(|rest| rest.split("/metrics").next());
            if let (Some(addr), true) = (addr, text.contains("serving")) {
                daemon.metrics = addr.to_string();
                return daemon;
            }
            assert!(Instant::now() < deadline, "volfs serve did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn scrape(&self) -> String {
        scrape(&self.metrics, "/metrics")
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        self.pool.shutdown();
        let _ = common::wait_child(&mut self.child, Duration::from_secs(15));
    }
}

/// GET `path` from `addr`; the body of a 200 answer with the OpenMetrics content type.
pub fn scrape(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the metrics address");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    body.to_string()
}

/// The value of the sample `name` whose labels include `labels`; panics if there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_sample(text, name, labels).unwrap_or_else(|| panic!("no sample {name} with {labels:?} in:\n{text}"))
}

pub fn find_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, set) = series.split_once('{').unwrap_or((series, "}"));
        let have: Vec<&str> = set.trim_end_matches('}').split(',').collect();
        (metric == name && wanted.iter().all(|w| have.contains(&w.as_str()))).then(|| value.parse().ok())?
    })
}

/// Parses the exposition with the Prometheus client library's strict OpenMetrics parser;
/// answers the family names it read.
pub fn parse_openmetrics(text: &str) -> Vec<String> {
    let script =
        "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
                  for f in parse(sys.stdin.read()):\n    print(f.name)\n";
    // The Debian package installs for the system's python.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with python3-prometheus-client)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing the exposition");
    let out = child.wait_with_output().expect("parser");
    assert!(out.status.success(), "the exposition does not parse: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8").lines().map(str::to_string).collect()
}

/// Every series the Grafana dashboard (mountd/deploy/grafana/volfs.json) queries whose name
/// starts with `prefix` must be one `text` holds: a renamed metric breaks the dashboard here.
fn assert_dashboard_finds(text: &str, prefix: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mountd/deploy/grafana/volfs.json");
    let dashboard = fs::read_to_string(&path).expect("the dashboard");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let names: std::collections::BTreeSet<&str> =
        dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with(prefix)).collect();
    assert!(names.len() >= 5, "the dashboard queries few {prefix} series: {names:?}");
    for name in names {
        let exported = text.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(exported, "the dashboard queries {name}, which is not exported:\n{text}");
    }
}

/// Reads a file with O_DIRECT, so that every byte comes from the daemon, not the page cache.
fn read_direct(path: &Path) -> usize {
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).expect("open");
    let layout = std::alloc::Layout::from_size_align(1 << 16, 4096).expect("layout");
    // SAFETY: a fresh aligned allocation, freed below; read fills at most its length.
    unsafe {
        let buf = std::alloc::alloc_zeroed(layout);
        let n = file.read(std::slice::from_raw_parts_mut(buf, layout.size())).expect("read");
        std::alloc::dealloc(buf, layout);
        n
    }
}

const FILES: usize = 40;
const FILE_BYTES: usize = 3000;

#[test]
fn metrics_move_as_the_workload_says() {
    let pool = TestPool::new();
    let daemon = Daemon::start(&pool);
    pool.create_volume("cap", Some("64Mi"));
    pool.create_volume("pt", None);
    let cap = pool.mount("cap", MountOpts::default());
    let pt = pool.mount("pt", MountOpts::default());
    fs::create_dir_all(cap.join("d/inner")).expect("mkdir");
    let view = pool.mount("cap", MountOpts::subpath("d"));
    let before = daemon.scrape();
    let volume = [("volume", "cap"), ("snapshot", "")];
    let of = |op: &'static str| [("volume", "cap"), ("snapshot", ""), ("op", op)];

    // A capacity volume: the daemon serves its file I/O and so sees every byte.
    let data = vec![7u8; FILE_BYTES];
    for i in 0..FILES {
        fs::write(cap.join(format!("f{i}")), &data).expect("write");
    }
    let read: usize = (0..FILES).map(|i| read_direct(&cap.join(format!("f{i}")))).sum();
    assert_eq!(read, FILES * FILE_BYTES);
    for _ in 0..3 {
        assert_eq!(common::errno_of("rmdir", fs::remove_dir(cap.join("d"))), libc::ENOTEMPTY);
    }
    // A volume without a capacity: the kernel passes file I/O through.
    for i in 0..5 {
        fs::write(pt.join(format!("p{i}")), b"x").expect("write");
        fs::read(pt.join(format!("p{i}"))).expect("read");
    }
    pool.ok(&["snapshot", "create", "cap", "s1"]);

    let after = daemon.scrape();
    // A series not there before counts from zero.
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - find_sample(&before, name, labels).unwrap_or(0.0)
    };
    assert_eq!(moved("volfs_fuse_requests_total", &of("create")), FILES as f64, "one CREATE per new file");
    assert_eq!(moved("volfs_written_bytes_total", &volume), (FILES * FILE_BYTES) as f64);
    assert_eq!(moved("volfs_read_bytes_total", &volume), (FILES * FILE_BYTES) as f64);
    assert_eq!(sample(&after, "volfs_fuse_request_errors_total", &[("op", "rmdir"), ("errno", "ENOTEMPTY")]), 3.0);
    assert_eq!(
        moved("volfs_fuse_request_duration_seconds_count", &of("create")),
        FILES as f64,
        "the latency histogram counts what the request counter counts"
    );
    assert_eq!(
        sample(
            &after,
            "volfs_fuse_request_duration_seconds_bucket",
            &[("op", "create"), ("volume", "cap"), ("le", "+Inf")]
        ),
        sample(&after, "volfs_fuse_requests_total", &of("create"))
    );
    // Five creates and five opens, each handed to the kernel.
    assert_eq!(moved("volfs_passthrough_opens_total", &[("volume", "pt"), ("snapshot", "")]), 10.0);
    assert_eq!(moved("volfs_passthrough_opens_total", &volume), 0.0, "a capacity volume never passes through");
    assert!(moved("volfs_metadata_commit_duration_seconds_count", &[]) >= FILES as f64);

    // Gauges: what `volume inspect` says, and the mounts made.
    let inspect = pool.json(&["volume", "inspect", "cap"]);
    assert_eq!(sample(&after, "volfs_volume_capacity_bytes", &volume), (64 << 20) as f64);
    assert_eq!(sample(&after, "volfs_volume_used_bytes", &volume), inspect["used_bytes"].as_u64().unwrap() as f64);
    assert_eq!(sample(&after, "volfs_volume_inodes_used", &volume), inspect["inodes"].as_u64().unwrap() as f64);
    assert_eq!(sample(&after, "volfs_volume_inodes", &volume), inspect["inode_limit"].as_u64().unwrap() as f64);
    assert_eq!(find_sample(&after, "volfs_volume_inodes", &[("volume", "pt")]), None, "no limit of its own");
    assert_eq!(sample(&after, "volfs_volume_mounts", &[("volume", "cap"), ("snapshot", ""), ("kind", "volume")]), 1.0);
    assert_eq!(sample(&after, "volfs_volume_mounts", &[("volume", "cap"), ("snapshot", ""), ("kind", "subpath")]), 1.0);
    assert_eq!(sample(&after, "volfs_volume_snapshots", &[("volume", "cap")]), 1.0);
    assert_eq!(sample(&after, "volfs_snapshot_exclusive_bytes", &[("volume", "cap"), ("snapshot", "s1")]), 0.0);
    assert_eq!(sample(&after, "volfs_daemon_recovered", &[]), 0.0);

    // Label values are bounded: no file names or paths, whatever the workload named.
    let samples: Vec<&str> = after.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.iter().all(|l| !l.contains("f17") && !l.contains('/')), "a path or file name in a label:\n{after}");
    assert_dashboard_finds(&after, "volfs_");
    let families = parse_openmetrics(&after);
    for family in ["volfs_fuse_requests", "volfs_fuse_request_duration_seconds", "volfs_volume_used_bytes"] {
        assert!(families.iter().any(|f| f == family), "{family} missing from {families:?}");
    }

    // `volfs stats` reads the same counters.
    let stats = pool.json(&["stats"]);
    let cap_stats =
        stats["volumes"].as_array().unwrap().iter().find(|v| v["volume"] == "cap" && v["snapshot"].is_null());
    let creates = cap_stats.unwrap()["requests"].as_array().unwrap().iter().find(|r| r["op"] == "create").unwrap();
    assert_eq!(
        creates["latency"]["buckets"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        FILES as u64
    );
    let table = pool.ok(&["stats"]);
    assert!(table.lines().any(|l| l.split_whitespace().take(3).eq(["cap", "create", &FILES.to_string()])), "{table}");
    drop((view, cap, pt));
}

#[test]
fn top_shows_each_volume_live_in_a_terminal() {
    let pool = TestPool::new();
    pool.create_volume("busy", Some("1Gi"));
    pool.create_volume("idle", None);
    let busy = pool.mount("busy", MountOpts::default());
    let _idle = pool.mount("idle", MountOpts::default());
    fs::write(busy.join("seed"), vec![1u8; 4 << 20]).expect("write");
    let session = format!("volfs-top-{}", std::process::id());
    let top = format!("{VOLFS} --pool {} top --interval 0.5", pool.path().display());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    let started = tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "20", &top]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    // Keep the busy volume busy until top shows requests on it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (stop, dir) = (stop.clone(), busy.path().to_path_buf());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(dir.join(format!("w{}", i % 64)), b"data").expect("write");
                i += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).to_string();
        let busy_ops = screen
            .lines()
            .find(|l| l.starts_with("busy "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
        if busy_ops.is_some_and(|n| n > 0) || Instant::now() > deadline {
            break screen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().expect("worker");
    tmux(&["kill-session", "-t", &session]);
    let row = |name: &str| -> Vec<String> {
        let line = screen.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{screen}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert!(screen.contains("VOLUME") && screen.contains("OPS/S") && screen.contains("P99"), "{screen}");
    let busy_row = row("busy");
    assert!(busy_row[1].parse::<u64>().unwrap() > 0, "no requests/s shown for the busy volume:\n{screen}");
    assert!(busy_row[6].starts_with('≤'), "no p99 for the busy volume:\n{screen}");
    // Used 4 MiB and more (the seed file), capacity 1.0 GiB, 0%, one mount.
    assert_eq!(&busy_row[busy_row.len() - 4..], ["1.0", "GiB", "0%", "1"], "{screen}");
    let idle_row = row("idle");
    assert_eq!(idle_row[1], "0", "{screen}");
    assert_eq!(&idle_row[idle_row.len() - 3..], ["-", "-", "1"], "a volume without a capacity:\n{screen}");
}

/// The address `mountd serve --metrics-addr 127.0.0.1:0` bound, from its log.
fn mountd_metrics(m: &common::mountd::Mountd) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = m.log();
        if let Some(addr) = log.split("metrics at http://").nth(1).and_then(|rest| rest.split("/metrics").next()) {
            return addr.to_string();
        }
        assert!(Instant::now() < deadline, "mountd names no metrics address: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mountd_counts_csi_rpcs_plugin_calls_volumes_and_claims() {
    use mountd::csi::v1::controller_client::ControllerClient;
    use mountd::csi::v1::identity_client::IdentityClient;
    use mountd::csi::v1::volume_capability::access_mode::Mode;
    use mountd::csi::v1::volume_capability::{AccessMode, AccessType, MountVolume};
    use mountd::csi::v1::{CreateVolumeRequest, DeleteVolumeRequest, ProbeRequest, VolumeCapability};

    let root = tempfile::Builder::new().prefix("vm").tempdir_in("/tmp").expect("temp dir");
    let plugin = root.path().join("plugin.sock");
    let m = common::mountd::Mountd::start_with_args(Some(plugin.clone()), vec!["--metrics-addr=127.0.0.1:0".into()]);
    let addr = mountd_metrics(&m);
    let text = scrape(&addr, "/metrics");
    let series = |text: &str, method: &str, code: &str| {
        find_sample(text, "mountd_csi_requests_total", &[("method", method), ("code", code)]).unwrap_or(0.0)
    };
    let before_probes = series(&text, "Probe", "OK");

    let channel = mountd::client::connect(&m.csi_socket).await.expect("connecting to mountd");
    let mut identity = IdentityClient::new(channel.clone());
    let mut controller = ControllerClient::new(channel);
    for _ in 0..3 {
        identity.probe(ProbeRequest::default()).await.expect("Probe");
    }
    let refused = controller.create_volume(CreateVolumeRequest::default()).await;
    assert_eq!(refused.expect_err("a nameless CreateVolume").code(), tonic::Code::InvalidArgument);
    let created = controller
        .create_volume(CreateVolumeRequest {
            name: "pvc-m1".into(),
            volume_capabilities: vec![VolumeCapability {
                access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
                access_type: Some(AccessType::Mount(MountVolume::default())),
            }],
            ..CreateVolumeRequest::default()
        })
        .await
        .expect("CreateVolume")
        .into_inner();
    let volume_id = created.volume.expect("a volume").volume_id;
    controller.delete_volume(DeleteVolumeRequest { volume_id, ..Default::default() }).await.expect("DeleteVolume");
    assert!(common::docker::plugin_call(&plugin, "Plugin.Activate", "{}").body.contains("VolumeDriver"));
    assert!(common::docker::plugin_call(&plugin, "VolumeDriver.Get", r#"{"Name":"missing"}"#)
        .body
        .contains("\"Err\":\""));

    // Standalone mode: a claim bound to a volume provisioned for it, and a pod using it.
    let manifests = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: csi.volfs.io\n---\n\
        apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: fast\n  resources: {requests: {storage: 64Mi}}\n---\n\
        apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: unmet}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  resources: {requests: {storage: 64Mi}}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - name: main\n    image: busybox:local\n    volumeMounts:\n    - {name: data, mountPath: /data}\n  volumes:\n  - name: data\n    persistentVolumeClaim: {claimName: data}\n";
    let applied = m.client(&["apply", "-f", "-"], Some(manifests));
    assert!(applied.status.success(), "apply: {}", String::from_utf8_lossy(&applied.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(&addr, "/metrics");
        let published = find_sample(&text, "mountd_volumes", &[("state", "published")]).unwrap_or(0.0);
        if published == 1.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    assert_eq!(series(&text, "Probe", "OK") - before_probes, 3.0);
    assert_eq!(series(&text, "CreateVolume", "InvalidArgument"), 1.0);
    assert_eq!(series(&text, "CreateVolume", "OK"), 1.0);
    assert_eq!(series(&text, "DeleteVolume", "OK"), 1.0);
    assert_eq!(sample(&text, "mountd_csi_request_duration_seconds_count", &[("method", "CreateVolume")]), 2.0);
    assert_eq!(sample(&text, "mountd_docker_requests_total", &[("call", "Plugin.Activate"), ("code", "OK")]), 1.0);
    assert_eq!(
        sample(&text, "mountd_docker_requests_total", &[("call", "VolumeDriver.Get"), ("code", "NotFound")]),
        1.0
    );
    assert_eq!(sample(&text, "mountd_standalone_claims", &[("phase", "Bound")]), 1.0);
    assert_eq!(sample(&text, "mountd_standalone_claims", &[("phase", "Pending")]), 1.0);
    assert_eq!(sample(&text, "mountd_standalone_volumes", &[("phase", "Bound")]), 1.0);
    assert_eq!(sample(&text, "mountd_standalone_volumes", &[("phase", "Released")]), 0.0);
    assert_eq!(sample(&text, "mountd_volumes", &[("state", "staged")]), 1.0);
    assert_eq!(sample(&text, "mountd_volumes", &[("state", "published")]), 1.0, "the pod's volume:\n{text}");
    assert_eq!(sample(&text, "mountd_docker_volumes", &[("state", "created")]), 0.0);
    assert_dashboard_finds(&text, "mountd_");
    let families = parse_openmetrics(&text);
    for family in ["mountd_csi_requests", "mountd_csi_request_duration_seconds", "mountd_standalone_claims"] {
        assert!(families.iter().any(|f| f == family), "{family} missing from {families:?}");
    }
}
