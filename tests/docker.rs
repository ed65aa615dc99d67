//! mountd's Docker volume plugin driven by the real Docker: `docker volume create -d`, `docker
//! run -v` with busybox containers, anonymous volumes from an image's VOLUME line, and bad input.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};

use common::docker::{plugin_socket, Dockerd};
use common::mountd::Mountd;

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
    /// `docker run --rm --network none ARGS...` that must succeed; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        self.docker.ok(&all)
    }

    fn data_plane_volumes(&self) -> Vec<String> {
        self.mountd.pool.volume_names()
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_sized_volume_is_shared_outlives_its_containers_and_stops_writes_at_its_size() {
    let s = setup();
    let d = &s.docker;
    d.ok(&["volume", "create", "-d", &s.driver, "--opt", "size=64Mi", "v1"]);
    s.run(&["-v", "v1:/data", "busybox:local", "sh", "-c", "echo hello > /data/f"]);
    assert_eq!(s.run(&["-v", "v1:/data", "busybox:local", "cat", "/data/f"]), "hello\n");

    // Past 64Mi the write fails inside the container, as on a full disk.
    let full = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "v1:/data",
        "busybox:local",
        "dd",
        "if=/dev/zero",
        "of=/data/big",
        "bs=1M",
        "count=80",
    ]);
    assert!(!full.status.success(), "a write past the size succeeded");
    assert!(stderr(&full).contains("No space left on device"), "{}", stderr(&full));
    let df = s.run(&["-v", "v1:/data", "busybox:local", "df", "-k", "/data"]);
    assert!(df.contains("65536"), "df shows the 64Mi size: {df}");
    s.run(&["-v", "v1:/data", "busybox:local", "rm", "/data/big"]);

    // Two containers share it at once.
    d.ok(&["run", "-d", "--name", "ca", "--network", "none", "-v", "v1:/data", "busybox:local", "sleep", "600"]);
    d.ok(&["run", "-d", "--name", "cb", "--network", "none", "-v", "v1:/data", "busybox:local", "sleep", "600"]);
    d.ok(&["exec", "ca", "sh", "-c", "echo from-a > /data/shared"]);
    assert_eq!(d.ok(&["exec", "cb", "cat", "/data/shared"]), "from-a\n");

    // In use: removal is refused, by Docker and by the plugin itself.
    let refused = d.docker(&["volume", "rm", "v1"]);
    assert!(!refused.status.success() && stderr(&refused).contains("in use"), "{}", stderr(&refused));
    let answer = plugin_call(&plugin_socket(&s.driver), "VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert!(answer.contains("in use by container"), "{answer}");

    let inspect: serde_json::Value = serde_json::from_str(&d.ok(&["volume", "inspect", "v1"])).unwrap();
    assert_eq!(inspect[0]["Driver"], serde_json::json!(s.driver));
    assert_eq!(inspect[0]["Status"]["capacity"], serde_json::json!(64u64 << 20));
    let listed = d.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(listed.contains(&format!("{} v1", s.driver)), "{listed}");

    d.ok(&["rm", "-f", "ca", "cb"]);
    assert_eq!(
        s.run(&["-v", "v1:/data", "busybox:local", "cat", "/data/shared"]),
        "from-a\n",
        "data outlives containers"
    );
    d.ok(&["volume", "rm", "v1"]);
    assert!(s.data_plane_volumes().is_empty(), "the volume is gone: {:?}", s.data_plane_volumes());
}

#[test]
fn an_image_volume_with_volume_driver_gets_a_volfs_volume_that_outlives_the_container() {
    let s = setup();
    let d = &s.docker;
    d.build("withvol:local", "FROM busybox:local\nVOLUME /data\n");
    let run = ["run", "--name", "app", "--network", "none", "--volume-driver", &s.driver, "withvol:local"];
    d.ok(&[&run[..], &["sh", "-c", "echo kept > /data/f"]].concat());
    let mounts: serde_json::Value =
        serde_json::from_str(&d.ok(&["inspect", "app", "--format", "{{json .Mounts}}"])).unwrap();
    assert_eq!(mounts[0]["Driver"], serde_json::json!(s.driver), "{mounts}");
    let name = mounts[0]["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64, "an anonymous volume: {name}");
    assert_eq!(s.data_plane_volumes().len(), 1);
    d.ok(&["rm", "app"]);
    let listed = d.ok(&["volume", "ls", "-q", "--filter", &format!("driver={}", s.driver)]);
    assert!(listed.contains(&name), "the volume outlives docker rm: {listed}");
    assert_eq!(s.run(&["-v", &format!("{name}:/data"), "busybox:local", "cat", "/data/f"]), "kept\n");
}

#[test]
fn mounts_survive_a_kill_of_mountd_and_are_released_after_it() {
    let mut s = setup();
    s.docker.ok(&["volume", "create", "-d", &s.driver, "v2"]);
    let args = ["run", "-d", "--name", "cw", "--network", "none", "-v", "v2:/data", "busybox:local", "sleep", "600"];
    s.docker.ok(&args);
    s.mountd.kill();
    s.docker.ok(&["exec", "cw", "sh", "-c", "echo during > /data/f"]);
    s.mountd.restart();
    s.docker.ok(&["rm", "-f", "cw"]);
    assert_eq!(s.run(&["-v", "v2:/data", "busybox:local", "cat", "/data/f"]), "during\n");
    s.docker.ok(&["volume", "rm", "v2"]);
    assert!(s.data_plane_volumes().is_empty());
}

#[test]
fn bad_requests_are_refused_naming_the_problem_and_change_nothing() {
    let s = setup();
    let d = &s.docker;
    for (opt, named) in [("nonsense=1", "nonsense"), ("size=lots", "lots"), ("subpath=../x", "subpath")] {
        let out = d.docker(&["volume", "create", "-d", &s.driver, "--opt", opt, "x"]);
        assert!(!out.status.success(), "{opt} was accepted");
        assert!(stderr(&out).contains(named), "{opt}: {}", stderr(&out));
    }
    let socket = plugin_socket(&s.driver);
    for (call, body, named) in [
        ("VolumeDriver.Create", "{not json", "malformed"),
        ("VolumeDriver.Create", r#"{"Opts":{}}"#, "Name"),
        ("VolumeDriver.Create", r#"{"Name":"../etc"}"#, "invalid volume name"),
        ("VolumeDriver.Mount", r#"{"Name":"nope","ID":"c1"}"#, "no such volume"),
        ("VolumeDriver.Remove", r#"{"Name":"nope"}"#, "no such volume"),
    ] {
        let answer = plugin_call(&socket, call, body);
        let err = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["Err"].as_str().unwrap_or("").to_string();
        assert!(err.contains(named), "{call} {body}: {answer}");
    }
    assert!(plugin_call(&socket, "Plugin.Activate", "").contains("VolumeDriver"));
    assert!(s.data_plane_volumes().is_empty(), "nothing was created");
    assert!(d.ok(&["volume", "ls", "-q", "--filter", &format!("driver={}", s.driver)]).trim().is_empty());
}

/// One HTTP/1.1 POST to the plugin socket, as dockerd sends it; the response body.
fn plugin_call(socket: &std::path::Path, call: &str, body: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("connecting to the plugin socket");
    let request = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}
