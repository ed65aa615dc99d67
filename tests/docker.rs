//! mountd's Docker volume plugin driven by the real Docker: `docker volume create -d`, `docker
//! run -v` with busybox containers (no network), sharing, removal, anonymous volumes from an
//! image's VOLUME line, clones, restores and subpaths, a kill of mountd, and bad input.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

use common::docker::{plugin_call, plugin_socket, Dockerd, PluginAnswer, BUSYBOX_IMAGE};
use common::mountd::Mountd;
use mountd::records::{DockerRecord, Records, State};

/// A Docker daemon and a mountd serving a plugin of a name no other test uses.
struct Setup {
    driver: String,
    mountd: Mountd,
    docker: Dockerd,
}

fn setup() -> Setup {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let driver = format!("volfs-t{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mountd = Mountd::start_with(Some(plugin_socket(&driver)));
    Setup { driver, mountd, docker: Dockerd::start() }
}

impl Setup {
    /// `docker volume create -d DRIVER [--opt OPT]... NAME`, which must succeed.
    fn create(&self, name: &str, opts: &[&str]) {
        let mut args = vec!["volume", "create", "-d", &self.driver];
        for opt in opts {
            args.extend(["--opt", opt]);
        }
        args.push(name);
        self.docker.ok(&args);
    }

    /// `docker run --rm --network none -v VOLUME:/data busybox:local CMD...`.
    fn run_output(&self, volume: &str, cmd: &[&str]) -> std::process::Output {
        let mount = format!("{volume}:/data");
        self.docker.docker(&[&["run", "--rm", "--network", "none", "-v", &mount, BUSYBOX_IMAGE][..], cmd].concat())
    }

    /// The same, which must succeed; its stdout.
    fn run_on(&self, volume: &str, cmd: &[&str]) -> String {
        let out = self.run_output(volume, cmd);
        assert!(out.status.success(), "docker run -v {volume}:/data {cmd:?} failed: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A container `name` that keeps `volume` mounted at /data until removed.
    fn start_sleeper(&self, name: &str, volume: &str) {
        let mount = format!("{volume}:/data");
        let args = ["run", "-d", "--name", name, "--network", "none", "-v", &mount, BUSYBOX_IMAGE, "sleep", "1000"];
        self.docker.ok(&args);
    }

    /// `docker volume inspect NAME`, the one volume's object.
    fn inspect(&self, name: &str) -> Value {
        let all: Value = serde_json::from_str(&self.docker.ok(&["volume", "inspect", name])).unwrap();
        all[0].clone()
    }

    /// The data-plane volume behind a Docker volume, as the plugin reports it.
    fn data_plane_volume(&self, name: &str) -> String {
        self.inspect(name)["Status"]["volume"].as_str().expect("Status names the data-plane volume").to_string()
    }

    /// The data plane's volumes, from `volfs volume list --json`.
    fn data_plane_volumes(&self) -> Vec<String> {
        let list = self.mountd.pool.json(&["volume", "list"]);
        list.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect()
    }

    /// The Docker volumes of this driver.
    fn docker_volumes(&self) -> Vec<String> {
        let filter = format!("driver={}", self.driver);
        self.docker.ok(&["volume", "ls", "-q", "--filter", &filter]).split_whitespace().map(str::to_string).collect()
    }

    fn plugin(&self, call: &str, body: &str) -> PluginAnswer {
        plugin_call(&plugin_socket(&self.driver), call, body)
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_sized_volume_stops_writes_at_its_size_and_its_data_outlives_the_containers() {
    let s = setup();
    s.create("v1", &["size=64Mi"]);
    s.run_on("v1", &["sh", "-c", "echo hello > /data/f"]);
    assert_eq!(s.run_on("v1", &["cat", "/data/f"]), "hello\n");

    let df = s.run_on("v1", &["df", "-k", "/data"]);
    assert!(df.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(1) == Some("65536")), "64Mi in df: {df}");
    let full = s.run_output("v1", &["dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=80"]);
    assert!(!full.status.success(), "a write of 80M into 64Mi succeeded: {}", stderr(&full));
    assert!(stderr(&full).contains("No space left on device"), "{}", stderr(&full));

    s.run_on("v1", &["rm", "/data/big"]);
    assert_eq!(s.run_on("v1", &["cat", "/data/f"]), "hello\n", "the data outlives three containers");
    assert_eq!(s.docker_volumes(), ["v1"]);
}

#[test]
fn two_containers_share_a_volume_at_once() {
    let s = setup();
    s.create("shared", &[]);
    s.start_sleeper("ca", "shared");
    s.start_sleeper("cb", "shared");
    s.docker.ok(&["exec", "ca", "sh", "-c", "echo from-a > /data/x"]);
    assert_eq!(s.docker.ok(&["exec", "cb", "cat", "/data/x"]), "from-a\n");
    s.docker.ok(&["exec", "cb", "sh", "-c", "echo from-b >> /data/x"]);
    assert_eq!(s.docker.ok(&["exec", "ca", "cat", "/data/x"]), "from-a\nfrom-b\n");

    // The first container out leaves the volume mounted for the other.
    s.docker.ok(&["rm", "-f", "ca"]);
    assert_eq!(s.docker.ok(&["exec", "cb", "cat", "/data/x"]), "from-a\nfrom-b\n");
    s.docker.ok(&["rm", "-f", "cb"]);
    assert_eq!(s.plugin("VolumeDriver.Path", r#"{"Name":"shared"}"#).json()["Mountpoint"], json!(""));
}

#[test]
fn a_volume_in_use_is_not_removed_and_a_removed_one_is_gone_from_the_data_plane() {
    let s = setup();
    s.create("v1", &["size=16Mi"]);
    let id = s.data_plane_volume("v1");
    assert!(s.data_plane_volumes().contains(&id), "{id} in {:?}", s.data_plane_volumes());
    s.start_sleeper("user", "v1");
    s.docker.ok(&["exec", "user", "sh", "-c", "echo kept > /data/f"]);

    let refused = s.docker.docker(&["volume", "rm", "v1"]);
    assert!(!refused.status.success(), "docker volume rm of a volume in use succeeded");
    assert!(stderr(&refused).contains("in use"), "{}", stderr(&refused));
    // The plugin refuses too, when asked directly.
    let answer = s.plugin("VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert!(answer.err().contains("in use by container"), "{}", answer.body);
    assert_eq!(s.docker.ok(&["exec", "user", "cat", "/data/f"]), "kept\n");

    s.docker.ok(&["rm", "-f", "user"]);
    s.docker.ok(&["volume", "rm", "v1"]);
    assert!(!s.data_plane_volumes().contains(&id), "{id} is still in {:?}", s.data_plane_volumes());
    assert!(s.docker_volumes().is_empty());
    assert!(s.plugin("VolumeDriver.Get", r#"{"Name":"v1"}"#).err().contains("no such volume"));
}

#[test]
fn volume_ls_and_inspect_show_the_driver_the_mountpoint_and_the_status() {
    let s = setup();
    s.create("v1", &["size=64Mi"]);
    let listed = s.docker.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(listed.lines().any(|l| l == format!("{} v1", s.driver)), "{listed}");

    s.start_sleeper("user", "v1");
    let v = s.inspect("v1");
    assert_eq!(v["Name"], json!("v1"));
    assert_eq!(v["Driver"], json!(s.driver));
    let mountpoint = PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert_eq!(mountpoint, s.mountd.state_dir.join("docker/v1"), "{v}");
    assert!(common::is_mountpoint(&mountpoint), "{} is mounted", mountpoint.display());
    assert_eq!(v["Status"]["capacity"], json!(64u64 << 20), "{v}");
    assert_eq!(v["Status"]["options"], json!({ "size": "64Mi" }), "{v}");
    assert!(v["Status"]["used_bytes"].is_u64(), "{v}");

    s.docker.ok(&["rm", "-f", "user"]);
    assert!(!common::is_mountpoint(&mountpoint), "the last container out unmounts");
}

#[test]
fn an_image_volume_with_volume_driver_gets_a_volfs_volume_that_outlives_the_container() {
    let s = setup();
    s.docker.build("withvol:local", &format!("FROM {BUSYBOX_IMAGE}\nVOLUME /data\n"));
    let run = ["run", "--name", "app", "--network", "none", "--volume-driver", &s.driver, "withvol:local"];
    s.docker.ok(&[&run[..], &["sh", "-c", "echo kept > /data/f"]].concat());

    let mounts: Value =
        serde_json::from_str(&s.docker.ok(&["inspect", "app", "--format", "{{json .Mounts}}"])).unwrap();
    assert_eq!(mounts[0]["Driver"], json!(s.driver), "{mounts}");
    assert_eq!(mounts[0]["Destination"], json!("/data"), "{mounts}");
    let name = mounts[0]["Name"].as_str().unwrap().to_string();
    assert!(name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()), "an anonymous volume: {name}");
    let id = s.data_plane_volume(&name);
    assert_eq!(s.data_plane_volumes(), [id.as_str()]);

    s.docker.ok(&["rm", "app"]);
    assert_eq!(s.docker_volumes(), [name.as_str()], "the volume outlives docker rm");
    assert_eq!(s.run_on(&name, &["cat", "/data/f"]), "kept\n");
    assert_eq!(s.data_plane_volumes(), [id]);
}

#[test]
fn volumes_are_cloned_restored_and_shown_by_subpath() {
    let s = setup();
    // Not a data-plane name: the data-plane volume is named otherwise, and the options find it.
    s.create("Src_1", &["size=32Mi"]);
    let src = s.data_plane_volume("Src_1");
    assert_ne!(src, "Src_1");
    s.run_on("Src_1", &["sh", "-c", "mkdir /data/site && echo one > /data/site/index && echo x > /data/other"]);
    s.mountd.pool.ok(&["snapshot", "create", &src, "s1"]);
    s.run_on("Src_1", &["sh", "-c", "echo two > /data/site/index"]);

    s.create("copy", &["from-volume=Src_1"]);
    assert_eq!(s.run_on("copy", &["cat", "/data/site/index"]), "two\n");
    s.create("restored", &["from-snapshot=Src_1@s1"]);
    assert_eq!(s.run_on("restored", &["cat", "/data/site/index"]), "one\n");
    s.create("by-id", &[&format!("from-snapshot={src}@s1")]);
    assert_eq!(s.run_on("by-id", &["cat", "/data/site/index"]), "one\n");
    s.run_on("copy", &["sh", "-c", "echo three > /data/site/index"]);
    assert_eq!(s.run_on("Src_1", &["cat", "/data/site/index"]), "two\n", "a clone is a volume of its own");

    s.create("site", &["from-volume=Src_1", "subpath=site"]);
    assert_eq!(s.run_on("site", &["ls", "/data"]), "index\n");
    s.create("fresh", &["subpath=made/here"]);
    s.run_on("fresh", &["sh", "-c", "echo deep > /data/f"]);
    s.create("fresh-all", &[&format!("from-volume={}", s.data_plane_volume("fresh"))]);
    assert_eq!(s.run_on("fresh-all", &["cat", "/data/made/here/f"]), "deep\n", "the subpath is made in the volume");

    // Create again: the same options are the same volume; others are refused.
    assert_eq!(s.plugin("VolumeDriver.Create", r#"{"Name":"copy","Opts":{"from-volume":"Src_1"}}"#).err(), "");
    let other = s.plugin("VolumeDriver.Create", r#"{"Name":"copy","Opts":{"size":"1Gi"}}"#);
    assert!(other.err().contains("exists with other options"), "{}", other.body);

    let out = s.docker.docker(&["volume", "create", "-d", &s.driver, "--opt", "from-volume=nowhere", "x"]);
    assert!(!out.status.success() && stderr(&out).contains("nowhere"), "{}", stderr(&out));
    assert!(!s.docker_volumes().contains(&"x".to_string()));
}

#[test]
fn mounts_survive_a_kill_of_mountd_and_are_released_after_it() {
    let mut s = setup();
    s.create("v2", &[]);
    s.start_sleeper("cw", "v2");
    s.mountd.kill();
    s.docker.ok(&["exec", "cw", "sh", "-c", "echo during > /data/f"]);
    s.mountd.restart();
    s.docker.ok(&["rm", "-f", "cw"]);
    assert_eq!(s.run_on("v2", &["cat", "/data/f"]), "during\n");
    let id = s.data_plane_volume("v2");
    s.docker.ok(&["volume", "rm", "v2"]);
    assert!(!s.data_plane_volumes().contains(&id));
}

#[test]
fn a_create_and_a_remove_cut_short_by_a_crash_are_finished_at_the_next_start() {
    let driver = format!("volfs-t{}-crash", std::process::id());
    let mut mountd = Mountd::start_with(Some(plugin_socket(&driver)));
    let call = |call: &str, body: &str| plugin_call(&plugin_socket(&driver), call, body);
    assert_eq!(call("VolumeDriver.Create", r#"{"Name":"old","Opts":null}"#).err(), "");
    mountd.stop();
    {
        // What a mountd killed half-way leaves: records written, the data plane not yet asked.
        let records = Records::open(&mountd.state_dir).unwrap();
        let mut old: DockerRecord = records.get("old").unwrap().unwrap();
        old.state = State::Deleting;
        records.put(&old).unwrap();
        let opts = [("size".to_string(), "8Mi".to_string())].into();
        let new = DockerRecord {
            name: "new".into(),
            volume_id: "new".into(),
            opts,
            mounted_by: Default::default(),
            state: State::Creating,
        };
        records.put(&new).unwrap();
    }
    mountd.restart();
    let volumes = mountd.pool.json(&["volume", "list"]);
    let names: Vec<_> = volumes.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["new"], "{volumes}");
    let listed = call("VolumeDriver.List", "{}").json();
    assert_eq!(listed["Volumes"], json!([{ "Name": "new", "Mountpoint": "" }]), "{listed}");
    let new = call("VolumeDriver.Get", r#"{"Name":"new"}"#).json();
    assert_eq!(new["Volume"]["Status"]["capacity"], json!(8u64 << 20), "{new}");
}

#[test]
fn bad_requests_are_refused_naming_the_problem_and_change_nothing() {
    let s = setup();
    for (opt, named) in [
        ("nonsense=1", &["nonsense", "size, from-snapshot, from-volume, subpath"][..]),
        ("size=lots", &["size", "lots"]),
        ("subpath=../x", &["subpath"]),
        ("from-snapshot=nosnap", &["from-snapshot", "VOLUME@SNAPSHOT"]),
    ] {
        let out = s.docker.docker(&["volume", "create", "-d", &s.driver, "--opt", opt, "x"]);
        assert!(!out.status.success(), "--opt {opt} was accepted");
        for n in named {
            assert!(stderr(&out).contains(n), "--opt {opt}: {n} not in {}", stderr(&out));
        }
    }
    for (call, body, named) in [
        ("VolumeDriver.Create", "{not json", "malformed request"),
        ("VolumeDriver.Create", "", "malformed request"),
        ("VolumeDriver.Create", r#"{"Opts":{}}"#, "missing field `Name`"),
        ("VolumeDriver.Create", r#"{"Name":"../etc"}"#, "invalid volume name"),
        ("VolumeDriver.Create", r#"{"Name":"a","Opts":{"size":"1Gi","from":"b"}}"#, "unknown option \"from\""),
        ("VolumeDriver.Mount", r#"{"Name":"nope","ID":"c1"}"#, "no such volume"),
        ("VolumeDriver.Remove", r#"{"Name":"nope"}"#, "no such volume"),
        ("VolumeDriver.Get", r#"{"Name":"a/b"}"#, "invalid volume name"),
    ] {
        let answer = s.plugin(call, body);
        assert_eq!(answer.status, 200, "{call} {body}: {}", answer.body);
        assert_eq!(answer.content_type, "application/vnd.docker.plugins.v1+json");
        assert!(answer.err().contains(named), "{call} {body}: {}", answer.body);
    }
    assert_eq!(s.plugin("VolumeDriver.Nonsense", "{}").status, 404);
    let activate = s.plugin("Plugin.Activate", "");
    assert_eq!(activate.json()["Implements"], json!(["VolumeDriver"]));
    assert_eq!(s.plugin("VolumeDriver.Capabilities", "").json()["Capabilities"], json!({ "Scope": "local" }));

    assert!(s.data_plane_volumes().is_empty(), "nothing was created: {:?}", s.data_plane_volumes());
    assert!(s.docker_volumes().is_empty());
    assert_eq!(s.plugin("VolumeDriver.List", "{}").json()["Volumes"], json!([]));
}
