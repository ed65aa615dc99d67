//! The `mountd` command: the volfs control plane (`serve`), and kubectl's verbs for standalone
//! mode (`apply`, `get`, `describe`, `delete`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mountd::serve::{self, Config};

#[derive(Parser)]
#[command(
    name = "mountd",
    version,
    about = "The volfs control plane: CSI driver, Docker volume plugin, and Kubernetes' storage model on a node without Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CSI services, the Docker volume plugin and standalone mode (in the foreground).
    Serve(ServeArgs),
    /// Create or update objects from Kubernetes manifests (YAML or JSON).
    Apply {
        #[command(flatten)]
        target: Target,
        /// A file, a directory of .yaml/.yml/.json files, or - for stdin.
        #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List objects of a kind, or show one.
    Get {
        #[command(flatten)]
        target: Target,
        /// pvc, pv, sc, vs, vsc, vsclass, volumeattachment, cm, secret, pod (or the full names).
        kind: String,
        name: Option<String>,
        /// wide, json, yaml or name.
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long = "all-namespaces")]
        all_namespaces: bool,
    },
    /// Show an object in detail, with its events.
    Describe {
        #[command(flatten)]
        target: Target,
        kind: String,
        name: String,
    },
    /// Delete an object (claims in use and bound volumes stay Terminating until released).
    Delete {
        #[command(flatten)]
        target: Target,
        kind: String,
        name: String,
        /// Return at once instead of waiting until the object is gone.
        #[arg(long = "wait", default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
    },
}

/// Which daemon, and which namespace.
#[derive(clap::Args)]
struct Target {
    /// The state dir of the `mountd serve` to talk to.
    #[arg(long, env = "MOUNTD_STATE", value_name = "DIR")]
    state_dir: PathBuf,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where mountd keeps its records (created 0700).
    #[arg(long, env = "MOUNTD_STATE", value_name = "DIR")]
    state_dir: PathBuf,
    /// This node's name: CSI's node id and topology segment.
    #[arg(long, value_name = "NAME")]
    node_id: String,
    /// The data plane's pool (default: STATE_DIR/pool).
    #[arg(long, value_name = "DIR")]
    pool: Option<PathBuf>,
    /// The data plane's control socket (default: the one its pool names).
    #[arg(long, value_name = "PATH")]
    volfs_socket: Option<PathBuf>,
    /// The volfs binary, to start a data plane when none serves the pool (default: `volfs`
    /// beside mountd, else from PATH).
    #[arg(long, value_name = "PATH")]
    volfs_bin: Option<PathBuf>,
    /// A service manager runs the data plane (a volfs unit or container): never start one,
    /// wait for it instead.
    #[arg(long, conflicts_with = "volfs_bin")]
    external_data_plane: bool,
    /// The CSI endpoint.
    #[arg(long, value_name = "URL", default_value = "unix:///run/volfs/csi.sock")]
    csi_endpoint: String,
    /// Serve the Docker volume-plugin protocol on this socket (the driver is named after it:
    /// /run/docker/plugins/volfs.sock serves `-d volfs`).
    #[arg(long, value_name = "PATH")]
    docker_socket: Option<PathBuf>,
    /// NodeGetInfo's max_volumes_per_node (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_volumes_per_node: i64,
    /// This node's labels, for PVs' node affinity: KEY=VALUE, comma-separated.
    #[arg(long, value_name = "LABELS", value_delimiter = ',', value_parser = label)]
    node_labels: Vec<(String, String)>,
    /// Run applied pods' containers with this runtime (only `docker`); without it, mountd
    /// prepares their mounts only.
    #[arg(long, value_name = "RUNTIME", value_parser = ["docker"])]
    runtime: Option<String>,
    /// The docker client to run containers with.
    #[arg(long, value_name = "PATH", default_value = "docker")]
    docker_bin: PathBuf,
    /// The Docker daemon to use (docker's -H), when not the default.
    #[arg(long, value_name = "URL")]
    docker_host: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9751); off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

fn label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => args,
        command => return client(command),
    };
    // Whatever this process creates on the node (pool, records, logs, sockets) is root's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOUNTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let volfs_bin = (!args.external_data_plane).then(|| args.volfs_bin.unwrap_or_else(default_volfs));
    let config = Config {
        pool: args.pool.unwrap_or_else(|| args.state_dir.join("pool")),
        state_dir: args.state_dir,
        node_id: args.node_id,
        volfs_socket: args.volfs_socket,
        volfs_bin,
        csi_endpoint: args.csi_endpoint,
        docker_socket: args.docker_socket,
        max_volumes_per_node: args.max_volumes_per_node,
        node_labels: args.node_labels.into_iter().collect(),
        runtime: args
            .runtime
            .map(|_| mountd::standalone::runtime::Docker { bin: args.docker_bin, host: args.docker_host }),
        metrics_addr: args.metrics_addr,
    };
    match serve::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mountd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The kubectl-like verbs: print what they answer, or the error.
fn client(command: Command) -> ExitCode {
    use mountd::standalone::cli;
    let result = match &command {
        Command::Serve(_) => unreachable!("served by main"),
        Command::Apply { target, files } => cli::apply(&target.state_dir, files),
        Command::Get { target, kind, name, output, all_namespaces } => {
            cli::get(&target.state_dir, kind, name.as_deref(), &target.namespace, *all_namespaces, output.as_deref())
        }
        Command::Describe { target, kind, name } => cli::describe(&target.state_dir, kind, name, &target.namespace),
        Command::Delete { target, kind, name, wait } => {
            cli::delete(&target.state_dir, kind, name, &target.namespace, *wait)
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `volfs` beside this binary when it is there, else whatever PATH finds.
fn default_volfs() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("volfs"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("volfs"))
}
