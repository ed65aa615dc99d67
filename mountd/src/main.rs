//! The `mountd` command: the volfs control plane (`serve`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mountd::serve::{self, Config};

#[derive(Parser)]
#[command(name = "mountd", version, about = "The volfs control plane: CSI driver and Docker volume plugin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CSI services and the Docker volume plugin (runs in the foreground).
    Serve(ServeArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever this process creates on the node (pool, records, logs, sockets) is root's alone.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOUNTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let Command::Serve(args) = cli.command;
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
    };
    match serve::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mountd: {e:#}");
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
