//! The `volfs` command: the daemon (`serve`) and the CLI that talks to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use serde_json::Value;

use volfs::daemon::{self, Service};
use volfs::names::VolumeName;
use volfs::pool::{parse_snapshot_name, OpenMode, Pool};
use volfs::quantity::{parse_size, HumanBytes};
use volfs_api::{socket_path, Client, ErrorKind, Request, SnapshotRef, SpecText, VolumeSource};

/// How long the CLI waits for the daemon: mounting or deleting a large volume takes a while,
/// but a hung daemon must not hang the CLI.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

#[derive(Parser)]
#[command(name = "volfs", version, about = "Container volumes served by a FUSE daemon")]
struct Cli {
    /// The pool directory that holds every volume.
    #[arg(long, env = "VOLFS_POOL", global = true)]
    pool: Option<PathBuf>,
    /// The daemon's control socket (default: inside the pool).
    #[arg(long, env = "VOLFS_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the pool: every mount of it, and the control socket (runs in the foreground).
    Serve {
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9750); off by default.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
        /// Seconds a stop (SIGTERM, SIGINT, `shutdown`) may take before the daemon exits without
        /// waiting for what is left, such as a request stuck on the pool's disk.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        stop_limit: u64,
    },
    /// Create, list, inspect and delete volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Cut, list and delete snapshots (read-only, point-in-time copies of a volume).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Mount a volume, or a snapshot (VOLUME@SNAP, read-only); starts a daemon for the pool
    /// if none runs. Returns once mounted.
    Mount {
        volume: String,
        mountpoint: PathBuf,
        #[arg(long)]
        read_only: bool,
        /// Serve file I/O in the daemon instead of letting the kernel pass it to the data files.
        #[arg(long)]
        no_passthrough: bool,
        /// Show only this directory (or regular file, mounted on a file) of the volume: a subPath
        /// mount; symlinks are never followed.
        #[arg(long, value_name = "PATH")]
        subpath: Option<String>,
        /// Make the subpath's missing directories, with the volume root's mode.
        #[arg(long, requires = "subpath")]
        create: bool,
    },
    /// Unmount a volume or a projected tree.
    Umount { mountpoint: PathBuf },
    /// Projected trees: configMap, secret, downwardAPI and serviceAccountToken sources served
    /// read-only from memory, laid out as the kubelet lays them out.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// List the mounts the daemon serves.
    Mounts,
    /// FUSE requests served since the daemon started, by volume and operation, with their
    /// service time; metadata commits.
    Stats,
    /// A live view of every volume: requests/s, bytes/s through the daemon, p99 service time,
    /// usage against capacity. Ctrl-C ends it.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes.
        #[arg(long, short = 'n')]
        count: Option<u64>,
    },
    /// Check every invariant of the pool; --repair reclaims leftovers of interrupted operations.
    Fsck {
        #[arg(long)]
        repair: bool,
    },
    /// Unmount everything and stop the daemon.
    Shutdown,
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Mount the tree SPEC describes (the projected source, then the objects it names).
    Mount {
        spec: PathBuf,
        mountpoint: PathBuf,
        /// Show only this directory (or file, on a file mountpoint) of the tree, live.
        #[arg(long, value_name = "PATH")]
        subpath: Option<String>,
    },
    /// Swap in the tree SPEC describes now, in one step; a bad SPEC changes nothing.
    Update { mountpoint: PathBuf, spec: PathBuf },
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Create a volume: empty, a clone of a volume, or a restore of a snapshot. SIZE is a
    /// Kubernetes quantity: 10Gi, 500Mi, 1G. A clone or restore shares its source's data until
    /// either side changes it, and takes its capacity unless given one.
    Create {
        name: String,
        #[arg(long, value_name = "SIZE")]
        capacity: Option<String>,
        /// The most files, directories and other inodes it may hold (`df -i`). Default: one
        /// per 16 KiB of capacity, as ext4; without a capacity, bounded by the pool alone.
        #[arg(long, value_name = "COUNT")]
        inodes: Option<String>,
        /// Restore this snapshot into the new volume.
        #[arg(long, value_name = "VOLUME@SNAP", conflicts_with = "from_volume")]
        from_snapshot: Option<String>,
        /// Clone this volume as it is now.
        #[arg(long, value_name = "VOLUME")]
        from_volume: Option<String>,
    },
    List,
    Inspect {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Change a volume's capacity, also while it is mounted (`df` shows the new size at once).
    Resize {
        name: String,
        #[arg(long, value_name = "SIZE")]
        capacity: String,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Cut snapshot VOLUME@SNAP: every write completed before it, none after. Returns when cut.
    Create { volume: String, snapshot: String },
    /// List snapshots with their creation time, size, and the bytes only they hold.
    List { volume: Option<String> },
    /// Delete snapshot VOLUME@SNAP; the space only it held comes back.
    Delete { snapshot: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever this process creates on the node (pool, records, logs, sockets) is root's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let default = if matches!(cli.command, Command::Serve { .. }) { "info,fjall=warn,lsm_tree=warn" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VOLFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("volfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let pool = cli
        .pool
        .as_deref()
        .ok_or_else(|| anyhow!("no pool given: pass --pool DIR or set VOLFS_POOL"))
        .and_then(|p| std::path::absolute(p).context("resolving the pool path"))?;
    let socket = cli.socket.as_deref().map(std::path::absolute).transpose()?;
    let client = Client::new(socket_path(&pool, socket.as_deref()), ANSWER_WAIT);
    let ctx = Ctx { client, explicit_socket: socket, pool, json: cli.json };
    match cli.command {
        Command::Serve { metrics_addr, stop_limit } => {
            let stop_limit = std::time::Duration::from_secs(stop_limit);
            daemon::serve(&ctx.pool, ctx.explicit_socket.as_deref(), metrics_addr.as_deref(), stop_limit)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Volume(VolumeCommand::Create { name, capacity, inodes, from_snapshot, from_volume }) => {
            // Checked before the pool is touched, so bad input creates nothing.
            VolumeName::parse(&name).map_err(|e| anyhow!(e))?;
            let capacity = capacity.as_deref().map(parse_size).transpose().map_err(|e| anyhow!("--capacity: {e}"))?;
            let inodes = inodes
                .map(|n| {
                    n.parse::<u64>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| anyhow!("--inodes: {n:?} is not a count above zero"))
                })
                .transpose()?;
            let from = match (from_snapshot, from_volume) {
                (Some(s), _) => {
                    parse_snapshot_name(&s).map_err(|e| anyhow!("--from-snapshot: {e}"))?;
                    Some(VolumeSource::Snapshot(SnapshotRef::parse(&s)?))
                }
                (None, Some(v)) => {
                    VolumeName::parse(&v).map_err(|e| anyhow!("--from-volume: {e}"))?;
                    Some(VolumeSource::Volume(v))
                }
                (None, None) => None,
            };
            let mode = if from.is_some() { OpenMode::Existing } else { OpenMode::CreateIfMissing };
            let v = ctx.request(Request::CreateVolume { name, capacity, inodes, from }, mode)?;
            ctx.print(&v, |v| {
                println!("created volume {} (capacity {})", v["name"].as_str().unwrap_or(""), capacity_text(v))
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Volume(VolumeCommand::List) => {
            let v = ctx.request(Request::ListVolumes, OpenMode::Existing)?;
            ctx.print(&v, |v| print_volume_table(v, &ctx.pool));
            Ok(ExitCode::SUCCESS)
        }
        Command::Volume(VolumeCommand::Inspect { name }) => {
            let v = ctx.request(Request::InspectVolume { name }, OpenMode::Existing)?;
            ctx.print(&v, print_volume);
            Ok(ExitCode::SUCCESS)
        }
        Command::Volume(VolumeCommand::Resize { name, capacity }) => {
            let capacity = parse_size(&capacity).map_err(|e| anyhow!("--capacity: {e}"))?;
            let v = ctx.request(Request::ResizeVolume { name, capacity }, OpenMode::Existing)?;
            ctx.print(&v, |v| println!("resized volume {} to {}", v["name"].as_str().unwrap_or(""), capacity_text(v)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Volume(VolumeCommand::Delete { name }) => {
            let v = ctx.request(Request::DeleteVolume { name: name.clone() }, OpenMode::Existing)?;
            ctx.print(&v, |_| println!("deleted volume {name}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot(SnapshotCommand::Create { volume, snapshot }) => {
            VolumeName::parse(&volume).map_err(|e| anyhow!(e))?;
            VolumeName::parse(&snapshot).map_err(|e| anyhow!("snapshot name: {e}"))?;
            let snapshot = SnapshotRef { volume, name: snapshot };
            let v = ctx.request(Request::CreateSnapshot { snapshot }, OpenMode::Existing)?;
            ctx.print(&v, |v| println!("created snapshot {}", v["name"].as_str().unwrap_or("")));
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot(SnapshotCommand::List { volume }) => {
            let v = ctx.request(Request::ListSnapshots { volume }, OpenMode::Existing)?;
            ctx.print(&v, print_snapshot_table);
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot(SnapshotCommand::Delete { snapshot }) => {
            parse_snapshot_name(&snapshot).map_err(|e| anyhow!(e))?;
            let snap = SnapshotRef::parse(&snapshot)?;
            ctx.request(Request::DeleteSnapshot { snapshot: snap }, OpenMode::Existing)?;
            ctx.print(&serde_json::json!({ "deleted": snapshot }), |_| println!("deleted snapshot {snapshot}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount { volume, mountpoint, read_only, no_passthrough, subpath, create } => {
            let mountpoint = std::path::absolute(&mountpoint)?;
            // A directory, or a regular file for a subPath naming one file (the daemon checks
            // that the kinds match).
            let file_view = subpath.is_some() && mountpoint.is_file();
            if !mountpoint.is_dir() && !file_view {
                let what = if mountpoint.exists() { "is not a directory" } else { "does not exist" };
                bail!("mountpoint {} {what}", mountpoint.display());
            }
            ctx.ensure_daemon(|pool| pool.volume(&volume).map(drop))?;
            let (volume, snapshot) = match volume.split_once('@') {
                Some((v, s)) => (v.to_string(), Some(s.to_string())),
                None => (volume, None),
            };
            let passthrough = !no_passthrough;
            let request = Request::Mount { volume, snapshot, mountpoint, read_only, passthrough, subpath, create };
            let v = ctx.daemon_call(request)?;
            ctx.print(&v, |v| {
                let ro = if v["read_only"] == Value::Bool(true) { " (read-only)" } else { "" };
                println!("mounted {} at {}{ro}", mount_name(v), v["mountpoint"].as_str().unwrap_or(""))
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Umount { mountpoint } => {
            let v = ctx.daemon_call(Request::Umount { mountpoint: std::path::absolute(&mountpoint)? })?;
            ctx.print(&v, |v| println!("unmounted {}", v["unmounted"].as_str().unwrap_or("")));
            Ok(ExitCode::SUCCESS)
        }
        Command::Project(ProjectCommand::Mount { spec, mountpoint, subpath }) => {
            let spec = read_spec(&spec)?;
            let mountpoint = std::path::absolute(&mountpoint)?;
            ctx.ensure_daemon(|_| Ok(()))?;
            let v = ctx.daemon_call(Request::ProjectMount { spec, mountpoint, subpath })?;
            ctx.print(&v, |v| {
                let at = v["mountpoint"].as_str().unwrap_or("");
                println!("projected tree mounted at {at} (..data -> {})", v["generation"].as_str().unwrap_or(""))
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Project(ProjectCommand::Update { mountpoint, spec }) => {
            let spec = read_spec(&spec)?;
            let mountpoint = std::path::absolute(&mountpoint)?;
            let v = ctx.daemon_call(Request::ProjectUpdate { mountpoint, spec })?;
            ctx.print(&v, |v| {
                let at = v["mountpoint"].as_str().unwrap_or("");
                let generation = v["generation"].as_str().unwrap_or("");
                if v["changed"] == Value::Bool(true) {
                    println!("updated {at}: ..data -> {generation}");
                } else {
                    println!("{at} unchanged: the content is the same (..data -> {generation})");
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Mounts => {
            let v = ctx.daemon_call(Request::ListMounts)?;
            ctx.print(&v, |v| {
                println!("{:<30} {:<50} MODE", "VOLUME", "MOUNTPOINT");
                for m in v.as_array().into_iter().flatten() {
                    let mode = if m["read_only"] == Value::Bool(true) { "ro" } else { "rw" };
                    println!("{:<30} {:<50} {mode}", mount_name(m), m["mountpoint"].as_str().unwrap_or(""));
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats => {
            let v = ctx.daemon_call(Request::Stats { snapshot_bytes: false })?;
            ctx.print(&v, |v| match serde_json::from_value(v.clone()) {
                Ok(stats) => print!("{}", volfs::report::stats_table(&stats)),
                Err(e) => eprintln!("volfs: the daemon's figures did not parse: {e}"),
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { interval, count } => {
            top(&ctx, interval, count)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck { repair } => {
            let v = ctx.request(Request::Fsck { repair }, OpenMode::Existing)?;
            ctx.print(&v, print_fsck);
            let clean = v["problems"].as_array().is_some_and(|p| p.is_empty());
            Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Shutdown => {
            ctx.daemon_call(Request::Shutdown)?;
            ctx.print(&Value::Null, |_| println!("daemon for {} stopped", ctx.pool.display()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct Ctx {
    pool: PathBuf,
    client: Client,
    explicit_socket: Option<PathBuf>,
    json: bool,
}

impl Ctx {
    fn print(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            human(v);
        }
    }

    /// Asks the daemon that serves the pool.
    fn daemon_call(&self, request: Request) -> anyhow::Result<Value> {
        self.client.call_blocking(&request).map_err(|e| match e.kind {
            ErrorKind::NotRunning => anyhow!(
                "no volfs daemon serves pool {} (start one with `volfs serve` or `volfs mount`)",
                self.pool.display()
            ),
            _ => anyhow!(e.message),
        })
    }

    /// Asks the daemon when one runs; otherwise opens the pool here and answers in-process.
    fn request(&self, request: Request, mode: OpenMode) -> anyhow::Result<Value> {
        match self.client.call_blocking(&request) {
            Ok(v) => Ok(v),
            Err(e) if e.kind != ErrorKind::NotRunning => bail!(e.message),
            Err(_) => {
                let pool = match request {
                    Request::Fsck { .. } => Pool::open_unrecovered(&self.pool, mode)?,
                    _ => Pool::open(&self.pool, mode)?,
                };
                Service::new(pool, false).handle(request).map_err(|e| anyhow!(e))
            }
        }
    }

    /// Starts a daemon for the pool in the background (its own session, so it outlives this
    /// command) unless one already answers. `check` runs on the pool first, so a request
    /// that cannot succeed starts nothing.
    fn ensure_daemon(&self, check: impl FnOnce(&Pool) -> volfs::Result<()>) -> anyhow::Result<()> {
        if self.client.call_blocking(&Request::Ping).is_ok() {
            return Ok(());
        }
        // Opening here first also turns a bad pool into a clear error.
        check(&Pool::open(&self.pool, OpenMode::CreateIfMissing)?)?;
        let log_path = self.pool.join("daemon.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = Process::new(std::env::current_exe()?);
        cmd.arg("serve").arg("--pool").arg(&self.pool);
        if let Some(s) = &self.explicit_socket {
            cmd.arg("--socket").arg(s);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the daemon")?;
        for _ in 0..500 {
            if self.client.call_blocking(&Request::Ping).is_ok() {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                bail!("the daemon exited ({status}): {}", log_tail(&log_path));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let socket = self.client.socket().display();
        bail!("the daemon did not answer on {socket} within 10 s; see {}", log_path.display())
    }
}

/// A projection SPEC's text; it goes to the daemon over the control socket, never elsewhere.
fn read_spec(path: &Path) -> anyhow::Result<SpecText> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading SPEC {}", path.display()))?;
    Ok(SpecText(text))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A mount's volume, and the directory it shows when it is a subPath mount: `web:a/b`.
fn mount_name(m: &Value) -> String {
    let volume = if m["projected"] == Value::Bool(true) { "(projected)" } else { m["volume"].as_str().unwrap_or("") };
    match m["subpath"].as_str() {
        Some(sub) if !sub.is_empty() => format!("{volume}:{sub}"),
        _ => volume.to_string(),
    }
}

/// `volfs top`: redraws the screen every `interval` seconds with the rates since the last one.
fn top(ctx: &Ctx, interval: f64, count: Option<u64>) -> anyhow::Result<()> {
    if !(0.1..=3600.0).contains(&interval) {
        bail!("--interval {interval}: give between 0.1 and 3600 seconds");
    }
    let read = || -> anyhow::Result<volfs_api::PoolStats> {
        Ok(serde_json::from_value(ctx.daemon_call(Request::Stats { snapshot_bytes: false })?)?)
    };
    let mut before = read()?;
    let mut at = std::time::Instant::now();
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let now = read()?;
        let elapsed = at.elapsed();
        at = std::time::Instant::now();
        let clock = jiff::Timestamp::now().strftime("%H:%M:%S");
        let title = format!("volfs top  pool {}  {clock} UTC  every {interval}s", ctx.pool.display());
        // Home and clear, then the screen: a terminal shows only the newest.
        print!("\x1b[H\x1b[2J{}", volfs::report::top_screen(&before, &now, elapsed, &title));
        std::io::Write::flush(&mut std::io::stdout())?;
        before = now;
        shown += 1;
    }
    Ok(())
}

fn capacity_text(v: &Value) -> String {
    match v["capacity"].as_u64() {
        None => "unlimited".into(),
        Some(c) => HumanBytes(c).to_string(),
    }
}

fn print_volume_table(v: &Value, pool: &Path) {
    println!("{:<40} {:>12} {:>12} {:>10}", "NAME", "CAPACITY", "USED", "INODES");
    let volumes = v.as_array().map(Vec::as_slice).unwrap_or_default();
    for vol in volumes {
        println!(
            "{:<40} {:>12} {:>12} {:>10}",
            vol["name"].as_str().unwrap_or(""),
            capacity_text(vol),
            HumanBytes(vol["used_bytes"].as_u64().unwrap_or(0)).to_string(),
            vol["inodes"].as_u64().unwrap_or(0)
        );
    }
    // Thin provisioning: capacities may add up to more than the pool's disk holds.
    let provisioned: u64 = volumes.iter().filter_map(|v| v["capacity"].as_u64()).sum();
    let unlimited = volumes.iter().filter(|v| v["capacity"].is_null()).count();
    if let Ok(st) = volfs::core::statvfs(pool) {
        let (size, free) = (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize);
        let over = if provisioned > size { ", overcommitted" } else { "" };
        println!(
            "provisioned {} of the pool's {} ({} free{over}); {unlimited} volumes without a capacity",
            HumanBytes(provisioned),
            HumanBytes(size),
            HumanBytes(free)
        );
    }
}

fn print_snapshot_table(v: &Value) {
    println!("{:<40} {:<25} {:>12} {:>12}", "NAME", "CREATED (UTC)", "SIZE", "EXCLUSIVE");
    for s in v.as_array().into_iter().flatten() {
        let created = s["created_unix"].as_i64().unwrap_or(0);
        println!(
            "{:<40} {:<25} {:>12} {:>12}",
            s["name"].as_str().unwrap_or(""),
            utc_text(created),
            HumanBytes(s["size_bytes"].as_u64().unwrap_or(0)).to_string(),
            HumanBytes(s["exclusive_bytes"].as_u64().unwrap_or(0)).to_string()
        );
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc_text(secs: i64) -> String {
    let [year, month, day, h, m, s] = volfs::meta::Timestamp { secs, nanos: 0 }.utc();
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}")
}

fn print_volume(v: &Value) {
    println!("name:      {}", v["name"].as_str().unwrap_or(""));
    println!("capacity:  {}", capacity_text(v));
    println!("used:      {}", HumanBytes(v["used_bytes"].as_u64().unwrap_or(0)));
    let limit = v["inode_limit"].as_u64().map_or("no limit but the pool's".into(), |n| format!("at most {n}"));
    println!("inodes:    {} ({limit})", v["inodes"].as_u64().unwrap_or(0));
    println!("created:   {} (unix time)", v["created_unix"].as_i64().unwrap_or(0));
    let mounts: Vec<String> = v["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mode = if m["read_only"] == Value::Bool(true) { "ro" } else { "rw" };
            format!("{} ({mode}, {})", m["mountpoint"].as_str().unwrap_or(""), mount_name(m))
        })
        .collect();
    println!("mounts:    {}", if mounts.is_empty() { "none".to_string() } else { mounts.join(", ") });
}

fn print_fsck(v: &Value) {
    println!(
        "checked {} volumes, {} inodes, {} data files",
        v["volumes"].as_u64().unwrap_or(0),
        v["inodes"].as_u64().unwrap_or(0),
        v["data_files"].as_u64().unwrap_or(0)
    );
    for p in v["problems"].as_array().into_iter().flatten() {
        println!("problem: {}", p.as_str().unwrap_or(""));
    }
    let verb = if v["repaired"] == Value::Bool(true) { "reclaimed" } else { "reclaimable" };
    for r in v["reclaimable"].as_array().into_iter().flatten() {
        println!("{verb}: {}", r.as_str().unwrap_or(""));
    }
    let problems = v["problems"].as_array().map_or(0, Vec::len);
    println!("{}", if problems == 0 { "pool is consistent".to_string() } else { format!("{problems} problems found") });
}
