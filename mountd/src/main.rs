//! mountd: the volfs control plane (CSI, the Docker volume plugin and the standalone
//! Kubernetes-style mode). This crate is a skeleton so far: it names what it will serve.

use std::process::ExitCode;

const USAGE: &str = "\
mountd: the volfs control plane

The CSI v1 services, the Docker volume-plugin protocol and the standalone PV/PVC mode are
not available in this version; use the volfs CLI (`volfs --help`) to manage volumes.";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("mountd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("mountd: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
