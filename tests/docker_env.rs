//! The Docker test fixture itself: a private dockerd runs a container of `busybox:local`,
//! builds an image from it, and two daemons run side by side.

mod common;

use common::docker::{Dockerd, BUSYBOX_IMAGE};

#[test]
fn a_private_daemon_runs_busybox_and_builds_an_image_from_it() {
    let d = Dockerd::start();
    let out = d.ok(&["run", "--rm", "--network", "none", BUSYBOX_IMAGE, "sh", "-c", "echo hi > /tmp/x && cat /tmp/x"]);
    assert_eq!(out, "hi\n");

    let build = d.build("withvol:local", "FROM busybox:local\nVOLUME /data\n");
    assert!(String::from_utf8_lossy(&build.stdout).contains("withvol:local"), "{build:?}");
    let volumes = d.ok(&["image", "inspect", "withvol:local", "--format", "{{json .Config.Volumes}}"]);
    assert_eq!(volumes.trim(), r#"{"/data":{}}"#);
    // The image's volume is an anonymous local volume, writable, and outlives `--rm`-less runs.
    let out = d.ok(&[
        "run",
        "--name",
        "app",
        "--network",
        "none",
        "withvol:local",
        "sh",
        "-c",
        "echo kept > /data/f && cat /data/f",
    ]);
    assert_eq!(out, "kept\n");
    let mounts = d.ok(&["inspect", "app", "--format", "{{range .Mounts}}{{.Type}} {{.Destination}}{{end}}"]);
    assert_eq!(mounts.trim(), "volume /data");
}

#[test]
fn two_daemons_run_side_by_side() {
    let a = Dockerd::start();
    let b = Dockerd::start();
    assert_ne!(a.socket(), b.socket());
    a.ok(&["run", "-d", "--name", "same", "--network", "none", BUSYBOX_IMAGE, "sleep", "600"]);
    // The same name on the other daemon: nothing is shared.
    b.ok(&["run", "-d", "--name", "same", "--network", "none", BUSYBOX_IMAGE, "sleep", "600"]);
    assert_eq!(a.ok(&["ps", "-q"]).lines().count(), 1);
    assert_eq!(b.ok(&["exec", "same", "sh", "-c", "echo from-b"]), "from-b\n");
    drop(a);
    // Stopping one leaves the other serving.
    assert_eq!(b.ok(&["ps", "--format", "{{.Names}}"]), "same\n");
}
