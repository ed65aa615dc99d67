//! Standalone mode end to end: a real `mountd serve` (and its data plane) driven by `mountd
//! apply/get/describe/delete` with Kubernetes manifests; pods' volumes are real FUSE mounts,
//! read and written with ordinary file calls. The Docker scenarios are in
//! `standalone_docker.rs`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::mountd::Mountd;

/// A node in standalone mode, and the kubectl-like client of it.
struct Node {
    m: Mountd,
}

const WAIT: Duration = Duration::from_secs(30);

impl Node {
    fn start() -> Node {
        Node { m: Mountd::start_with_args(None, vec!["--node-labels=zone=a,disk=ssd".into()]) }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let out = self.m.client(args, stdin);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, None);
        assert!(ok, "mountd {args:?} failed: {err}\n{}", self.m.log());
        out
    }

    fn apply(&self, yaml: &str) -> String {
        let (ok, out, err) = self.run(&["apply", "-f", "-"], Some(yaml));
        assert!(ok, "apply failed: {err}\n{yaml}");
        out
    }

    fn apply_err(&self, yaml: &str) -> String {
        let (ok, out, err) = self.run(&["apply", "-f", "-"], Some(yaml));
        assert!(!ok, "apply should fail:\n{yaml}\n{out}");
        err
    }

    fn json(&self, kind: &str, name: &str) -> Option<serde_json::Value> {
        let (ok, out, _) = self.run(&["get", kind, name, "-o", "json"], None);
        ok.then(|| serde_json::from_str(&out).expect("get -o json prints JSON"))
    }

    fn field(&self, kind: &str, name: &str, pointer: &str) -> String {
        self.json(kind, name)
            .and_then(|v| v.pointer(pointer).map(|f| f.as_str().map_or(f.to_string(), String::from)))
            .unwrap_or_default()
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}\n{}", self.m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_field(&self, kind: &str, name: &str, pointer: &str, value: &str) {
        let start = Instant::now();
        while self.field(kind, name, pointer) != value {
            if start.elapsed() > WAIT {
                let described = self.run(&["describe", kind, name], None).1;
                let claims = self.run(&["get", "pvc", "-A"], None).1;
                panic!("waited {WAIT:?} for {kind} {name} {pointer} = {value}\n{described}\n{claims}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host path of `container`'s mount at `mount_path` in pod `pod`.
    fn mount_of(&self, pod: &str, container: &str, mount_path: &str) -> PathBuf {
        self.wait_field("pod", pod, "/status/phase", "Running");
        let mounts: serde_json::Value =
            serde_json::from_str(&self.field("pod", pod, "/metadata/annotations/volfs.io~1mounts")).unwrap();
        let found =
            mounts.as_array().unwrap().iter().find(|m| m["container"] == container && m["mountPath"] == mount_path);
        PathBuf::from(
            found.unwrap_or_else(|| panic!("no mount {mount_path} in {mounts}"))["hostPath"].as_str().unwrap(),
        )
    }

    /// The reasons of the events `describe` shows for an object, in order.
    fn reasons(&self, kind: &str, name: &str) -> Vec<String> {
        let text = self.ok(&["describe", kind, name]);
        let events = text.split("Events:").nth(1).unwrap_or("");
        events.lines().skip(3).filter_map(|l| l.split_whitespace().nth(1).map(String::from)).collect()
    }

    fn volfs_volumes(&self) -> Vec<String> {
        self.m.pool.volume_names()
    }
}

fn pod(name: &str, claim: &str, extra_mounts: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: main\n    image: busybox:local\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n{extra_mounts}  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: {claim}}}\n"
    )
}

fn claim(name: &str, size: &str, modes: &str, class: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [{modes}]\n  storageClassName: \"{class}\"\n  resources: {{requests: {{storage: {size}}}}}\n{extra}"
    )
}

const CLASS: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: csi.volfs.io\nallowVolumeExpansion: true\n";
const LATE_CLASS: &str = "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: late}\nprovisioner: csi.volfs.io\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Retain\n";

#[test]
fn static_volumes_bind_by_the_controllers_rules_and_a_retained_volume_comes_back_both_ways() {
    let n = Node::start();
    n.m.pool.create_volume("data-a", Some("1Gi"));
    n.m.pool.create_volume("data-b", Some("4Gi"));
    let pv = |name: &str, size: &str, modes: &str| {
        format!("apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [{modes}]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  csi: {{driver: csi.volfs.io, volumeHandle: {name}}}\n")
    };
    n.apply(&format!(
        "{}---\n{}",
        pv("data-a", "1Gi", "ReadWriteOnce, ReadWriteMany"),
        pv("data-b", "4Gi", "ReadWriteOnce")
    ));
    n.wait_field("pv", "data-a", "/status/phase", "Available");
    // The RWO-only group is searched first: the larger RWO volume wins over the smaller RWO+RWX.
    n.apply(&claim("first", "512Mi", "ReadWriteOnce", "", ""));
    n.wait_field("pvc", "first", "/status/phase", "Bound");
    assert_eq!(n.field("pvc", "first", "/spec/volumeName"), "data-b");
    assert_eq!(n.field("pvc", "first", "/status/capacity/storage"), "4Gi");
    assert_eq!(n.field("pv", "data-b", "/spec/claimRef/name"), "first");

    n.apply(&pod("writer", "first", ""));
    std::fs::write(n.mount_of("writer", "main", "/data").join("kept"), "retained bytes").unwrap();
    n.ok(&["delete", "pod", "writer"]);
    n.ok(&["delete", "pvc", "first"]);
    n.wait_field("pv", "data-b", "/status/phase", "Released");

    // A new claim of the same name does not get the released volume (its old claim's uid);
    // it asks for more than data-a holds.
    n.apply(&claim("first", "2Gi", "ReadWriteOnce", "", ""));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(n.field("pvc", "first", "/status/phase"), "Pending");
    assert_eq!(n.field("pv", "data-b", "/status/phase"), "Released");
    assert!(n.reasons("pvc", "first").contains(&"FailedBinding".to_string()));

    // Way 1: drop only claimRef.uid: reserved for the claim of that name, which binds.
    let mut volume = n.json("pv", "data-b").unwrap();
    volume["spec"]["claimRef"].as_object_mut().unwrap().remove("uid");
    n.apply(&volume.to_string());
    n.wait_field("pvc", "first", "/status/phase", "Bound");
    assert_eq!(n.field("pvc", "first", "/spec/volumeName"), "data-b");
    n.apply(&pod("reader", "first", ""));
    assert_eq!(std::fs::read_to_string(n.mount_of("reader", "main", "/data").join("kept")).unwrap(), "retained bytes");
    n.ok(&["delete", "pod", "reader"]);
    n.ok(&["delete", "pvc", "first"]);
    n.wait_field("pv", "data-b", "/status/phase", "Released");

    // Way 2: re-apply the PV without claimRef (as `kubectl get -o yaml` prints it, edited).
    let mut volume = n.json("pv", "data-b").unwrap();
    volume["spec"].as_object_mut().unwrap().remove("claimRef");
    let yaml = n.ok(&["get", "pv", "data-b", "-o", "yaml"]);
    assert!(yaml.contains("claimRef"), "{yaml}");
    n.apply(&volume.to_string());
    n.wait_field("pv", "data-b", "/status/phase", "Available");
    n.apply(&claim("other", "3Gi", "ReadWriteOnce", "", ""));
    n.wait_field("pvc", "other", "/status/phase", "Bound");
    assert_eq!(n.field("pvc", "other", "/spec/volumeName"), "data-b");
    n.apply(&pod("again", "other", ""));
    assert_eq!(std::fs::read_to_string(n.mount_of("again", "main", "/data").join("kept")).unwrap(), "retained bytes");
    let pvs = n.ok(&["get", "pv"]);
    let columns: Vec<&str> =
        pvs.lines().next().unwrap().split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    let kubectl = [
        "NAME",
        "CAPACITY",
        "ACCESS MODES",
        "RECLAIM POLICY",
        "STATUS",
        "CLAIM",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "REASON",
        "AGE",
    ];
    assert_eq!(columns, kubectl, "{pvs}");
    assert!(
        pvs.lines().any(|l| l.starts_with("data-b ")
            && l.contains(" 4Gi ")
            && l.contains(" RWO ")
            && l.contains(" Bound ")
            && l.contains(" default/other ")),
        "{pvs}"
    );
}

#[test]
fn wait_for_first_consumer_provisions_when_a_pod_uses_the_claim_and_the_stages_show_in_order() {
    let n = Node::start();
    n.apply(&format!("{LATE_CLASS}---\n{}", claim("late-claim", "64Mi", "ReadWriteOnce", "late", "")));
    n.wait("WaitForFirstConsumer event", || {
        n.reasons("pvc", "late-claim").contains(&"WaitForFirstConsumer".to_string())
    });
    assert_eq!(n.field("pvc", "late-claim", "/status/phase"), "Pending");
    assert!(n.ok(&["get", "pv"]).starts_with("No resources found"));

    n.apply(&pod("consumer", "late-claim", ""));
    let data = n.mount_of("consumer", "main", "/data");
    std::fs::write(data.join("f"), "x").unwrap();
    let pv = n.field("pvc", "late-claim", "/spec/volumeName");
    assert!(pv.starts_with("pvc-"), "{pv}");
    assert_eq!(n.field("pvc", "late-claim", "/metadata/annotations/volume.kubernetes.io~1selected-node"), "node-1");
    assert_eq!(n.field("pv", &pv, "/spec/persistentVolumeReclaimPolicy"), "Retain");
    assert_eq!(n.field("pv", &pv, "/metadata/annotations/pv.kubernetes.io~1provisioned-by"), "csi.volfs.io");
    // Provision, attach, mount: each an event, in order.
    let claim_events = n.reasons("pvc", "late-claim");
    let at =
        |list: &[String], r: &str| list.iter().position(|x| x == r).unwrap_or_else(|| panic!("no {r} in {list:?}"));
    assert!(at(&claim_events, "WaitForFirstConsumer") < at(&claim_events, "Provisioning"));
    assert!(at(&claim_events, "Provisioning") < at(&claim_events, "ProvisioningSucceeded"));
    let pod_events = n.reasons("pod", "consumer");
    assert!(at(&pod_events, "Scheduled") < at(&pod_events, "SuccessfulAttachVolume"), "{pod_events:?}");
    assert!(at(&pod_events, "SuccessfulAttachVolume") < at(&pod_events, "SuccessfulMountVolume"), "{pod_events:?}");
    let attachments = n.ok(&["get", "volumeattachments"]);
    assert!(attachments.contains(&pv) && attachments.contains("true"), "{attachments}");

    // Deleting the pod unmounts and detaches; Retain keeps the volume after the claim goes.
    n.ok(&["delete", "pod", "consumer"]);
    assert!(!common::is_mountpoint(&data));
    assert!(n.ok(&["get", "volumeattachments"]).starts_with("No resources found"));
    n.ok(&["delete", "pvc", "late-claim"]);
    n.wait_field("pv", &pv, "/status/phase", "Released");
    assert!(n.volfs_volumes().contains(&pv));
}

#[test]
fn delete_reclaims_the_volume_and_a_claim_in_use_stays_terminating_until_its_pod_goes() {
    let n = Node::start();
    n.apply(&format!(
        "{CLASS}---\n{}---\n{}",
        claim("data", "32Mi", "ReadWriteOnce", "fast", ""),
        pod("app", "data", "")
    ));
    let mount = n.mount_of("app", "main", "/data");
    std::fs::write(mount.join("f"), "in use").unwrap();
    let pv = n.field("pvc", "data", "/spec/volumeName");

    let (ok, out, _) = n.run(&["delete", "pvc", "data"], None);
    assert!(ok);
    assert!(out.contains("persistentvolumeclaim \"data\" deleted") && out.contains("in use by pod app"), "{out}");
    assert!(n.ok(&["get", "pvc", "data"]).contains("Terminating"));
    assert_eq!(std::fs::read_to_string(mount.join("f")).unwrap(), "in use");
    // A new pod cannot use a claim being deleted.
    let err = n.apply_err(&pod("late", "data", ""));
    assert!(err.contains("persistentvolumeclaim \"data\" is being deleted"), "{err}");

    n.ok(&["delete", "pod", "app"]);
    n.wait("the claim to go", || n.json("pvc", "data").is_none());
    n.wait("the PV to go", || n.json("pv", &pv).is_none());
    assert!(!n.volfs_volumes().contains(&pv), "the volume of a Delete claim is deleted");
}

#[test]
fn snapshot_then_restore_and_clone_hold_the_data_of_their_moment() {
    let n = Node::start();
    let snap_class = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {name: snaps, annotations: {snapshot.storage.kubernetes.io/is-default-class: \"true\"}}\ndriver: csi.volfs.io\ndeletionPolicy: Delete\n";
    n.apply(&format!(
        "{CLASS}---\n{snap_class}---\n{}---\n{}",
        claim("src", "32Mi", "ReadWriteOnce", "fast", ""),
        pod("app", "src", "")
    ));
    let data = n.mount_of("app", "main", "/data");
    std::fs::write(data.join("file"), "before").unwrap();
    n.apply("apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: snap}\nspec: {source: {persistentVolumeClaimName: src}}\n");
    n.wait_field("vs", "snap", "/status/readyToUse", "true");
    assert_eq!(n.field("vs", "snap", "/status/restoreSize"), "32Mi");
    let content = n.field("vs", "snap", "/status/boundVolumeSnapshotContentName");
    assert_eq!(n.field("vsc", &content, "/spec/deletionPolicy"), "Delete");
    std::fs::write(data.join("file"), "after").unwrap();

    let restore = "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}\n";
    let clone = "  dataSource: {kind: PersistentVolumeClaim, name: src}\n";
    n.apply(&format!(
        "{}---\n{}",
        claim("restored", "32Mi", "ReadWriteOnce", "fast", restore),
        claim("cloned", "64Mi", "ReadWriteOnce", "fast", clone)
    ));
    n.apply(&format!("{}---\n{}", pod("r", "restored", ""), pod("c", "cloned", "")));
    assert_eq!(std::fs::read_to_string(n.mount_of("r", "main", "/data").join("file")).unwrap(), "before");
    assert_eq!(std::fs::read_to_string(n.mount_of("c", "main", "/data").join("file")).unwrap(), "after");
    assert_eq!(n.field("pvc", "cloned", "/status/capacity/storage"), "64Mi");

    n.ok(&["delete", "vs", "snap"]);
    n.wait("the content to go", || n.json("vsc", &content).is_none());
    let reasons = n.reasons("pvc", "restored");
    assert!(reasons.contains(&"ProvisioningSucceeded".to_string()), "{reasons:?}");
}

#[test]
fn raising_a_bound_claims_request_grows_its_mounted_volume_online() {
    let n = Node::start();
    n.apply(&format!(
        "{CLASS}---\n{}---\n{}",
        claim("grow", "16Mi", "ReadWriteOnce", "fast", ""),
        pod("app", "grow", "")
    ));
    let data = n.mount_of("app", "main", "/data");
    let size = |p: &std::path::Path| {
        let st = nix_statvfs(p);
        st.0 * st.1
    };
    assert_eq!(size(&data), 16 << 20);
    // Shrinking is refused, and so is growing a claim whose class does not allow it.
    let err = n.apply_err(&claim("grow", "8Mi", "ReadWriteOnce", "fast", ""));
    assert!(err.contains("can not be less than status.capacity"), "{err}");
    n.apply(&claim("grow", "48Mi", "ReadWriteOnce", "fast", ""));
    n.wait_field("pvc", "grow", "/status/capacity/storage", "48Mi");
    assert_eq!(size(&data), 48 << 20, "the mounted volume grew without a remount");
    let pv = n.field("pvc", "grow", "/spec/volumeName");
    assert_eq!(n.field("pv", &pv, "/spec/capacity/storage"), "48Mi");
    let reasons = n.reasons("pvc", "grow");
    assert!(
        reasons.contains(&"Resizing".to_string()) && reasons.contains(&"VolumeResizeSuccessful".to_string()),
        "{reasons:?}"
    );
}

/// statvfs: (fragment size, blocks).
fn nix_statvfs(path: &std::path::Path) -> (u64, u64) {
    let c = common::cpath(path);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C path and an out-pointer to a zeroed statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs {}", path.display());
    (st.f_frsize, st.f_blocks)
}

#[test]
fn config_map_changes_reach_every_mount_at_once_subpath_included_and_secrets_stay_off_disk() {
    let n = Node::start();
    let secret_value = "s3cr3t-standalone-value-7f1c";
    let objects = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: conf}}\ndata: {{app.conf: v1}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: {secret_value}}}\n"
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: app, labels: {tier: web}}\nspec:\n  containers:\n  - name: main\n    image: busybox:local\n    volumeMounts:\n    - {name: conf, mountPath: /etc/app}\n    - {name: conf, mountPath: /etc/app.conf, subPath: app.conf}\n    - {name: creds, mountPath: /secrets, readOnly: true}\n    - {name: info, mountPath: /info}\n  volumes:\n  - {name: conf, configMap: {name: conf}}\n  - {name: creds, secret: {secretName: creds, defaultMode: 0400}}\n  - name: info\n    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}\n";
    n.apply(&format!("{objects}---\n{pod}"));
    let whole = n.mount_of("app", "main", "/etc/app");
    let single = n.mount_of("app", "main", "/etc/app.conf");
    let secrets = n.mount_of("app", "main", "/secrets");
    assert_eq!(std::fs::read_to_string(whole.join("app.conf")).unwrap(), "v1");
    assert_eq!(std::fs::read_to_string(secrets.join("password")).unwrap(), secret_value);
    assert_eq!(std::fs::read_to_string(n.mount_of("app", "main", "/info").join("labels")).unwrap(), "tier=\"web\"");
    assert!(std::fs::write(whole.join("x"), "no").is_err(), "configMap volumes are read-only");

    // The apply wakes the controllers, which swap a new generation into every mount of the
    // configMap at once: the time it takes is printed, not asserted (a loaded machine only
    // delays it; the design has no polling interval in the way).
    let changed = Instant::now();
    n.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {app.conf: v2}\n");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    n.wait("the new configMap in both mounts", || read(&whole.join("app.conf")) == "v2" && read(&single) == "v2");
    eprintln!("configMap change visible through both mounts after {:?}", changed.elapsed());

    // Secret bytes: sealed in the store, never in a log, nowhere under the state dir.
    let mut found = Vec::new();
    for entry in walk(&n.m.pool.root().to_path_buf()) {
        if entry.starts_with(n.m.state_dir.join("pods")) {
            continue;
        }
        if std::fs::read(&entry).is_ok_and(|b| b.windows(secret_value.len()).any(|w| w == secret_value.as_bytes())) {
            found.push(entry);
        }
    }
    assert!(found.is_empty(), "secret bytes on disk in {found:?}");
    let describe = n.ok(&["describe", "secret", "creds"]);
    assert!(!describe.contains(secret_value) && describe.contains("password: 28 bytes"), "{describe}");
}

/// Every regular file under `dir` that is not a mount (FUSE mounts are skipped).
fn walk(dir: &PathBuf) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        if common::is_mountpoint(&d) && &d != dir {
            continue;
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                files.push(e.path());
            }
        }
    }
    files
}

#[test]
fn read_write_once_pod_admits_one_pod_and_read_write_many_is_shared() {
    let n = Node::start();
    n.apply(&format!(
        "{CLASS}---\n{}---\n{}",
        claim("solo", "16Mi", "ReadWriteOncePod", "fast", ""),
        claim("shared", "16Mi", "ReadWriteMany", "fast", "")
    ));
    n.apply(&format!("{}---\n{}", pod("one", "solo", ""), pod("two", "solo", "")));
    n.mount_of("one", "main", "/data");
    n.wait("FailedScheduling of the second pod", || n.reasons("pod", "two").contains(&"FailedScheduling".to_string()));
    let describe = n.ok(&["describe", "pod", "two"]);
    assert!(
        describe
            .contains("1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"),
        "{describe}"
    );
    assert_eq!(n.field("pod", "two", "/status/phase"), "");
    // Once the first pod goes, the second one gets the claim.
    n.ok(&["delete", "pod", "one"]);
    n.mount_of("two", "main", "/data");

    n.apply(&format!("{}---\n{}", pod("a", "shared", ""), pod("b", "shared", "")));
    std::fs::write(n.mount_of("a", "main", "/data").join("from-a"), "hello").unwrap();
    assert_eq!(std::fs::read_to_string(n.mount_of("b", "main", "/data").join("from-a")).unwrap(), "hello");
}

#[test]
fn containers_of_a_pod_share_a_volume_and_each_sees_only_its_own_sub_path() {
    let n = Node::start();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: two}\nspec:\n  containers:\n  - name: web\n    image: busybox:local\n    volumeMounts: [{name: shared, mountPath: /site, subPath: web}]\n  - name: log\n    image: busybox:local\n    env: [{name: DIR, value: logs}]\n    volumeMounts: [{name: shared, mountPath: /var/log, subPathExpr: $(DIR)}, {name: shared, mountPath: /all}]\n  volumes:\n  - name: shared\n    emptyDir: {sizeLimit: 8Mi}\n";
    n.apply(pod);
    let web = n.mount_of("two", "web", "/site");
    let log = n.mount_of("two", "log", "/var/log");
    let all = n.mount_of("two", "log", "/all");
    std::fs::write(web.join("index.html"), "page").unwrap();
    std::fs::write(log.join("access.log"), "line").unwrap();
    assert_eq!(std::fs::read_dir(&web).unwrap().count(), 1, "web sees only its subPath");
    assert!(!log.join("index.html").exists());
    assert_eq!(std::fs::read_to_string(all.join("web/index.html")).unwrap(), "page");
    assert_eq!(std::fs::read_to_string(all.join("logs/access.log")).unwrap(), "line");
    // sizeLimit is a hard capacity: ENOSPC past 8 MiB.
    let big = vec![7u8; 9 << 20];
    let err = std::fs::write(all.join("big"), &big).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let volume = n.volfs_volumes().into_iter().find(|v| v.starts_with("emptydir-")).expect("the emptyDir is a volume");
    n.ok(&["delete", "pod", "two"]);
    assert!(!n.volfs_volumes().contains(&volume), "the emptyDir goes with its pod");
}

#[test]
fn a_sub_path_may_name_one_file_of_a_claim_or_an_empty_dir() {
    let n = Node::start();
    n.apply(&format!(
        "{CLASS}---\n{}---\n{}",
        claim("data", "16Mi", "ReadWriteOnce", "fast", ""),
        pod("writer", "data", "")
    ));
    let data = n.mount_of("writer", "main", "/data");
    std::fs::create_dir(data.join("conf")).unwrap();
    std::fs::write(data.join("conf/app.conf"), "level=info").unwrap();
    let mounts = "    - {name: data, mountPath: /etc/app.conf, subPath: conf/app.conf}\n    - {name: scratch, mountPath: /run/lock, subPath: lock}\n";
    let reader =
        pod("reader", "data", mounts).replace("  volumes:\n", "  volumes:\n  - {name: scratch, emptyDir: {}}\n");
    n.apply(&reader);
    let file = n.mount_of("reader", "main", "/etc/app.conf");
    assert!(std::fs::metadata(&file).unwrap().is_file(), "a file subPath is a file on the node");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "level=info");
    std::fs::write(&file, "level=debug").unwrap();
    assert_eq!(std::fs::read_to_string(data.join("conf/app.conf")).unwrap(), "level=debug");
    assert!(n.mount_of("reader", "main", "/run/lock").is_dir(), "a missing subPath is made as a directory");
    n.ok(&["delete", "pod", "reader"]);
    assert!(!file.exists());
}

#[test]
fn bad_manifests_are_refused_naming_the_object_and_field_and_change_nothing() {
    let n = Node::start();
    n.apply(CLASS);
    let cases = [
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n", "no matches for kind \"Deployment\""),
        (&claim("c", "1Gi", "ReadWriteOnce", "fast", "  storageClasName: x\n") as &str, "unknown field spec.storageClasName"),
        (&claim("c", "ten", "ReadWriteOnce", "fast", ""), "spec.resources.requests[storage]: Invalid value: \"ten\""),
        (&claim("Bad_Name", "1Gi", "ReadWriteOnce", "fast", ""), "metadata.name: Invalid value: \"Bad_Name\""),
        (&claim("c", "1Gi", "ReadWriteOnce", "missing", ""), "spec.storageClassName: Not found: \"missing\""),
        (&claim("c", "1Gi", "ReadWriteSometimes", "fast", ""), "spec.accessModes[0]: Unsupported value: \"ReadWriteSometimes\""),
        (&pod("p", "nope", ""), "spec.volumes[0].persistentVolumeClaim.claimName: Not found: \"nope\""),
        (&pod("p", "c", "    - {name: data, mountPath: /x, subPath: ../../etc}\n"), "subPath: Invalid value: \"../../etc\": must not contain '..'"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i, volumeMounts: [{name: v, mountPath: /v}]}]\n  volumes: [{name: v, gitRepo: {repository: x}}]\n", "must specify a volume type volfs serves"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce]}\n", "spec.resources.requests[storage]: Required value"),
        ("key: [unclosed\n", "not YAML"),
    ];
    for (yaml, expected) in cases {
        // Each bad object comes with a good one: neither is applied.
        let err = n.apply_err(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: innocent}}\n---\n{yaml}"));
        assert!(err.contains(expected), "{yaml}\nexpected {expected:?} in: {err}");
        assert!(n.json("cm", "innocent").is_none(), "a refused apply changed nothing");
    }
    let (ok, _, err) = n.run(&["get", "deployments"], None);
    assert!(!ok && err.contains("doesn't have a resource type \"deployments\""), "{err}");
    let (ok, _, err) = n.run(&["delete", "pvc", "ghost"], None);
    assert!(!ok && err.contains("persistentvolumeclaim \"ghost\" not found"), "{err}");
}

#[test]
fn mountd_killed_in_the_middle_of_provisioning_and_binding_leaves_no_duplicate_and_no_lost_claim() {
    let mut n = Node::start();
    n.apply(CLASS);
    for round in 0..6u64 {
        let claims: String = (0..3)
            .map(|i| {
                format!(
                    "{}---\n{}---\n",
                    claim(&format!("c{round}-{i}"), "8Mi", "ReadWriteOnce", "fast", ""),
                    pod(&format!("p{round}-{i}"), &format!("c{round}-{i}"), "")
                )
            })
            .collect();
        n.apply(&claims);
        // Kill at a different moment each round: during provisioning, binding or mounting.
        std::thread::sleep(Duration::from_millis(round * 40));
        n.m.kill();
        n.m.restart();
        for i in 0..3 {
            let data = n.mount_of(&format!("p{round}-{i}"), "main", "/data");
            std::fs::write(data.join("f"), "ok").unwrap();
            assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "ok");
        }
    }
    let pvs: Vec<String> = n
        .ok(&["get", "pv", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("persistentvolume/").to_string())
        .collect();
    assert_eq!(pvs.len(), 18, "one PV per claim: {pvs:?}");
    let mut volumes: Vec<String> = n.volfs_volumes().into_iter().filter(|v| v.starts_with("pvc-")).collect();
    volumes.sort();
    let mut expected = pvs.clone();
    expected.sort();
    assert_eq!(volumes, expected, "one data-plane volume per PV, none extra");
}

// ---------------------------------------------------------------------------------------------
// With `--runtime docker`: real busybox containers, their mounts bound at their mountPaths.

use common::docker::{Dockerd, BUSYBOX_IMAGE, DOCKER};

/// A node that runs pods' containers with its own dockerd.
fn docker_node() -> (Node, Dockerd) {
    let docker = Dockerd::start();
    let args = vec![
        "--runtime=docker".to_string(),
        format!("--docker-bin={DOCKER}"),
        format!("--docker-host=unix://{}", docker.socket().display()),
    ];
    (Node { m: Mountd::start_with_args(None, args) }, docker)
}

/// A pod of busybox containers: (name, shell script, mounts as YAML flow items).
fn busybox_pod(name: &str, restart: &str, security: &str, containers: &[(&str, &str, &str)], volumes: &str) -> String {
    let mut text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n{security}  containers:\n");
    for (c, script, mounts) in containers {
        text.push_str(&format!(
            "  - name: {c}\n    image: {BUSYBOX_IMAGE}\n    command: [sh, -c]\n    args: [{}]\n    volumeMounts: [{mounts}]\n",
            serde_json::to_string(script).unwrap()
        ));
    }
    text.push_str(&format!("  volumes:\n{volumes}"));
    text
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_container_that_exits_is_restarted_and_finds_its_claim_and_empty_dir_as_it_left_them() {
    let (n, _docker) = docker_node();
    n.apply(&format!("{CLASS}---\n{}", claim("data", "16Mi", "ReadWriteOnce", "fast", "")));
    let script = "echo run >> /data/runs; echo run >> /scratch/runs; sleep 0.3; exit 1";
    let volumes = "  - {name: data, persistentVolumeClaim: {claimName: data}}\n  - {name: scratch, emptyDir: {}}\n";
    n.apply(&busybox_pod(
        "crashy",
        "Always",
        "",
        &[("main", script, "{name: data, mountPath: /data}, {name: scratch, mountPath: /scratch}")],
        volumes,
    ));
    let data = n.mount_of("crashy", "main", "/data");
    let scratch = n.mount_of("crashy", "main", "/scratch");
    n.wait("three runs", || {
        read(&data.join("runs")).lines().count() >= 3 && read(&scratch.join("runs")).lines().count() >= 3
    });
    n.wait("the restart count in the pod's status", || {
        n.json("pod", "crashy")
            .and_then(|p| p.pointer("/status/containerStatuses/0/restartCount")?.as_i64())
            .is_some_and(|c| c >= 1)
    });
}

#[test]
fn two_containers_share_a_claim_each_in_its_own_sub_path_with_the_pods_user_and_group() {
    let (n, _docker) = docker_node();
    n.apply(&format!("{CLASS}---\n{}", claim("shared", "16Mi", "ReadWriteOnce", "fast", "")));
    let security = "  securityContext: {runAsUser: 1000, fsGroup: 2000}\n";
    let web = (
        "web",
        "echo page > /site/index.html; ls -a /site > /site/seen; sleep 600",
        "{name: shared, mountPath: /site, subPath: web}",
    );
    let log = (
        "log",
        "echo line > /logs/app.log; ls -a /logs > /logs/seen; id > /logs/id; sleep 600",
        "{name: shared, mountPath: /logs, subPath: logs}",
    );
    n.apply(&busybox_pod(
        "two",
        "Always",
        security,
        &[web, log],
        "  - {name: shared, persistentVolumeClaim: {claimName: shared}}\n",
    ));
    let web_dir = n.mount_of("two", "web", "/site");
    let log_dir = n.mount_of("two", "log", "/logs");
    n.wait("both containers to write", || {
        read(&web_dir.join("seen")).contains("index.html") && read(&log_dir.join("seen")).contains("app.log")
    });
    assert!(!read(&web_dir.join("seen")).contains("app.log"), "web sees only its own subPath");
    assert!(!read(&log_dir.join("seen")).contains("index.html"), "log sees only its own subPath");
    let id = read(&log_dir.join("id"));
    assert!(id.starts_with("uid=1000 gid=0") && id.contains("2000"), "{id}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(web_dir.join("index.html")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 2000), "written as runAsUser, group fsGroup (setgid directory)");
    n.wait_field("pod", "two", "/status/containerStatuses/1/ready", "true");
    assert!(n.ok(&["get", "pod", "two"]).contains("2/2     Running"));
}

#[test]
fn a_replacement_pod_sees_the_data_of_the_pod_it_replaces_and_a_claim_grows_under_a_writer() {
    let (mut n, docker) = docker_node();
    n.apply(&format!("{CLASS}---\n{}", claim("state", "16Mi", "ReadWriteOnce", "fast", "")));
    let volumes = "  - {name: data, persistentVolumeClaim: {claimName: state}}\n";
    let writer = (
        "main",
        "echo generation-1 > /data/state; while true; do df -kP /data | tail -1 >> /data/df; sleep 0.2; done",
        "{name: data, mountPath: /data}",
    );
    n.apply(&busybox_pod("a", "Always", "", &[writer], volumes));
    let data = n.mount_of("a", "main", "/data");
    n.wait("the first df line", || read(&data.join("df")).lines().count() >= 1);
    assert!(
        read(&data.join("df")).lines().last().unwrap().split_whitespace().nth(1) == Some("16384"),
        "{}",
        read(&data.join("df"))
    );

    // The container's df grows without a restart.
    n.apply(&claim("state", "64Mi", "ReadWriteOnce", "fast", ""));
    n.wait("df in the container to show 64 MiB", || {
        read(&data.join("df")).lines().last().and_then(|l| l.split_whitespace().nth(1).map(String::from))
            == Some("65536".into())
    });
    let restarts = n.json("pod", "a").and_then(|p| p.pointer("/status/containerStatuses/0/restartCount")?.as_i64());
    assert_eq!(restarts, Some(0));

    // kill -9 of mountd: the running container keeps its mount, and mountd carries on after.
    n.m.kill();
    let lines = read(&data.join("df")).lines().count();
    n.wait("the container to keep writing with mountd down", || read(&data.join("df")).lines().count() > lines + 2);
    n.m.restart();

    // Deployment-style replacement: a goes, b (same claim) reads what a wrote.
    n.ok(&["delete", "pod", "a"]);
    assert!(docker.ok(&["ps", "-a", "--format", "{{.Names}}"]).trim().is_empty(), "the pod's containers are removed");
    let reader = ("main", "cat /data/state > /data/seen-by-b; sleep 600", "{name: data, mountPath: /data}");
    n.apply(&busybox_pod("b", "Always", "", &[reader], volumes));
    let data_b = n.mount_of("b", "main", "/data");
    n.wait("b to read a's data", || read(&data_b.join("seen-by-b")) == "generation-1\n");
}

#[test]
fn host_path_volumes_check_their_type_and_make_what_or_create_asks_for() {
    let n = Node::start();
    let base = n.m.pool.root().join("host");
    std::fs::create_dir(&base).unwrap();
    let host_pod = |name: &str, path: &std::path::Path, kind: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: main, image: busybox:local, volumeMounts: [{{name: h, mountPath: /h}}]}}]\n  volumes: [{{name: h, hostPath: {{path: {}, type: {kind}}}}}]\n", path.display())
    };
    n.apply(&host_pod("made", &base.join("new-dir"), "DirectoryOrCreate"));
    assert_eq!(n.mount_of("made", "main", "/h"), base.join("new-dir"));
    assert!(base.join("new-dir").is_dir());
    n.apply(&host_pod("file", &base.join("new-file"), "FileOrCreate"));
    n.mount_of("file", "main", "/h");
    assert!(base.join("new-file").is_file());
    n.apply(&host_pod("wrong", &base.join("new-dir"), "File"));
    n.wait("FailedMount", || n.reasons("pod", "wrong").contains(&"FailedMount".to_string()));
    let describe = n.ok(&["describe", "pod", "wrong"]);
    assert!(
        describe.contains(&format!("hostPath type check failed: {} is not a file", base.join("new-dir").display())),
        "{describe}"
    );
    // Deleting a pod never removes what its hostPath names.
    n.ok(&["delete", "pod", "made"]);
    assert!(base.join("new-dir").is_dir());
}

#[test]
fn a_pre_provisioned_snapshot_content_binds_to_the_snapshot_it_names_and_restores() {
    let n = Node::start();
    n.m.pool.create_volume("legacy", Some("16Mi"));
    let legacy = n.m.pool.mount("legacy", common::MountOpts::default());
    std::fs::write(legacy.join("f"), "at the cut").unwrap();
    n.m.pool.ok(&["snapshot", "create", "legacy", "before"]);
    std::fs::write(legacy.join("f"), "later").unwrap();
    legacy.unmount();
    n.apply(CLASS);
    let content = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {name: imported}\nspec:\n  deletionPolicy: Retain\n  driver: csi.volfs.io\n  source: {snapshotHandle: legacy@before}\n  volumeSnapshotRef: {name: old, namespace: default}\n";
    let snapshot = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: old}\nspec: {source: {volumeSnapshotContentName: imported}}\n";
    n.apply(&format!("{content}---\n{snapshot}"));
    n.wait_field("vs", "old", "/status/readyToUse", "true");
    assert_eq!(n.field("vs", "old", "/status/boundVolumeSnapshotContentName"), "imported");
    let restore = "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: old}\n";
    n.apply(&format!("{}---\n{}", claim("back", "16Mi", "ReadWriteOnce", "fast", restore), pod("p", "back", "")));
    assert_eq!(std::fs::read_to_string(n.mount_of("p", "main", "/data").join("f")).unwrap(), "at the cut");
    // Retain: deleting the snapshot keeps the content and the data-plane snapshot.
    n.ok(&["delete", "vs", "old"]);
    assert!(n.json("vsc", "imported").is_some());
    assert!(n.m.pool.ok(&["snapshot", "list", "legacy"]).contains("before"));
}

#[test]
fn a_memory_empty_dir_lives_on_a_tmpfs_with_its_size_limit_hard_and_subpaths_shared() {
    let n = Node::start();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: mem}\nspec:\n  containers:\n  - name: a\n    image: busybox:local\n    volumeMounts: [{name: cache, mountPath: /cache}]\n  - name: b\n    image: busybox:local\n    volumeMounts: [{name: cache, mountPath: /part, subPath: part}]\n  volumes:\n  - name: cache\n    emptyDir: {medium: Memory, sizeLimit: 4Mi}\n";
    n.apply(pod);
    let whole = n.mount_of("mem", "a", "/cache");
    let part = n.mount_of("mem", "b", "/part");
    std::fs::write(part.join("f"), "in memory").unwrap();
    assert_eq!(std::fs::read_to_string(whole.join("part/f")).unwrap(), "in memory");
    let (frsize, blocks) = nix_statvfs(&whole);
    assert_eq!(frsize * blocks, 4 << 20);
    let err = std::fs::write(whole.join("big"), vec![1u8; 5 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // Preallocation could not be counted on a tmpfs: refused, so it cannot pass sizeLimit.
    std::fs::remove_file(whole.join("big")).unwrap();
    // The kernel sends the release of the closed file after close returns; its space comes
    // back with it.
    let freed = (0..1000).any(|_| {
        let c = common::cpath(&whole);
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C path and an out-pointer to a zeroed statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize >= 1 << 20 || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        }
    });
    assert!(freed, "the space of a removed file comes back once the kernel releases it");
    let file = std::fs::File::create(whole.join("prealloc")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 64 << 10) };
    assert_eq!((rc, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EOPNOTSUPP)));
    drop(file);
    // The pool it lives in is a tmpfs mountd mounted in its state dir.
    let memory = n.m.state_dir.join("memory");
    let c = common::cpath(&memory);
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C path and an out-pointer to a zeroed statfs.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(st.f_type as i64, 0x0102_1994, "TMPFS_MAGIC");
    let volumes = || {
        let out = std::process::Command::new(common::VOLFS)
            .arg("--pool")
            .arg(memory.join("pool"))
            .args(["volume", "list", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("volume list --json")
    };
    assert_eq!(volumes().len(), 1);
    n.ok(&["delete", "pod", "mem"]);
    assert!(volumes().is_empty(), "the memory volume goes with its pod");
}

/// The pid of the `volfs serve` of `pool`, from its command line.
fn data_plane_pid(pool: &std::path::Path) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serves = args.iter().any(|a| *a == b"serve") && args.contains(&pool.as_os_str().as_encoded_bytes());
        serves.then_some(pid)
    })
}

#[test]
fn pods_mounts_come_back_when_a_data_plane_is_killed() {
    let n = Node::start();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n  - name: main\n    image: busybox:local\n    volumeMounts:\n    - {name: data, mountPath: /data}\n    - {name: conf, mountPath: /conf}\n    - {name: conf, mountPath: /one.conf, subPath: one.conf}\n    - {name: mem, mountPath: /mem}\n  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: data}}\n  - {name: conf, configMap: {name: conf}}\n  - {name: mem, emptyDir: {medium: Memory}}\n";
    let conf = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {one.conf: one}\n";
    n.apply(&format!("{CLASS}---\n{conf}---\n{}---\n{pod}", claim("data", "16Mi", "ReadWriteOnce", "fast", "")));
    let paths = ["/data", "/conf", "/one.conf", "/mem"].map(|p| n.mount_of("app", "main", p));
    std::fs::write(paths[0].join("f"), "claim").unwrap();
    std::fs::write(paths[3].join("f"), "memory").unwrap();
    let check = || {
        read(&paths[0].join("f")) == "claim"
            && read(&paths[1].join("one.conf")) == "one"
            && read(&paths[2]) == "one"
            && read(&paths[3].join("f")) == "memory"
    };
    assert!(check());
    for pool in [n.m.pool.path().to_path_buf(), n.m.state_dir.join("memory/pool")] {
        let pid = data_plane_pid(&pool).unwrap_or_else(|| panic!("no data plane serves {}", pool.display()));
        // SAFETY: signals the data plane this test's mountd started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(common::wait_pid_exit(pid, Duration::from_secs(10)));
        n.wait(&format!("every mount served again after killing the data plane of {}", pool.display()), check);
        assert_ne!(data_plane_pid(&pool), Some(pid));
    }
}
