//! `conflux bench`: the command line of the harness. `conflux bench [WORKLOAD.toml...]` runs
//! workloads (all of `bench/workloads/` by default); `conflux bench disk` and `conflux bench
//! net` measure the machine's limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::limits;
use crate::runner::{self, RunOptions};
use crate::server::{Durability, Server};
use crate::workload::Workload;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sequential write bandwidth of a directory's disk, with and without fdatasync.
    Disk(DiskArgs),
    /// Loopback TCP throughput.
    Net(NetArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    Always,
    Interval,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workload files; default: every `*.toml` in `--workloads-dir`.
    pub workloads: Vec<PathBuf>,
    #[arg(long, default_value = "bench/workloads")]
    pub workloads_dir: PathBuf,
    /// A running broker's Kafka address. Without it, a broker is started for each workload
    /// (this same binary, or `--binary`) on 127.0.0.1 with a fresh temporary data directory.
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Option<SocketAddr>,
    /// The `conflux` binary to start (default: this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Flush policy of the started broker: `always` (fsync before ack) or `interval`.
    #[arg(long, value_enum, default_value = "always")]
    pub durability: DurabilityArg,
    /// Parent of the started broker's data directory (default: the system temp dir).
    #[arg(long)]
    pub data_parent: Option<PathBuf>,
    /// Where reports go: `<name>[-<label>].json` and `.png`.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Label appended to report names (default: the durability when a broker is started).
    #[arg(long)]
    pub label: Option<String>,
    /// Override every workload's test duration (seconds).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override every workload's warm-up (seconds).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Override every workload's producer rate (msg/s, 0 = max).
    #[arg(long)]
    pub rate: Option<u64>,
    /// No per-second status line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DiskArgs {
    /// Directory to write in (use the broker's data disk).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Bytes per configuration at most (MiB).
    #[arg(long, default_value_t = 2048)]
    pub max_mib: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NetArgs {
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn main(args: BenchArgs) -> ExitCode {
    let result = match args.command {
        Some(BenchCommand::Disk(a)) => disk(a),
        Some(BenchCommand::Net(a)) => net(a),
        None => run(args.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conflux bench: {e}");
            ExitCode::from(1)
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn write_json(path: &Path, value: &impl serde::Serialize) -> CliResult {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
    Ok(())
}

fn disk(a: DiskArgs) -> CliResult {
    let per = Duration::from_secs_f64(a.seconds.clamp(0.1, 600.0));
    let results = limits::disk(&a.dir, per, a.max_mib.max(1) << 20)?;
    println!("sequential writes in {}", a.dir.display());
    println!(
        "{:>9} {:>10} {:>10} {:>14}",
        "block", "fdatasync", "MB/s", "sync mean ms"
    );
    for r in &results {
        println!(
            "{:>6} KiB {:>10} {:>10.1} {:>14.3}",
            r.block_bytes >> 10,
            if r.fdatasync { "each" } else { "end" },
            r.mb_per_s,
            r.sync_mean_ms
        );
    }
    if let Some(path) = a.json {
        write_json(&path, &results)?;
    }
    Ok(())
}

fn net(a: NetArgs) -> CliResult {
    let per = Duration::from_secs_f64(a.seconds.clamp(0.1, 600.0));
    let mut results = Vec::new();
    for (connections, chunk) in [(1, 64 << 10), (1, 1 << 20), (2, 1 << 20)] {
        let r = limits::net(connections, chunk, per)?;
        println!(
            "loopback TCP: {} connection(s), {:>5} KiB writes: {:>8.1} MB/s",
            r.connections,
            r.write_bytes >> 10,
            r.mb_per_s
        );
        results.push(r);
    }
    if let Some(path) = a.json {
        write_json(&path, &results)?;
    }
    Ok(())
}

fn workload_files(a: &RunArgs) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    if !a.workloads.is_empty() {
        return Ok(a.workloads.clone());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.workloads_dir)
        .map_err(|e| format!("reading {}: {e}", a.workloads_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn run(a: RunArgs) -> CliResult {
    let mut workloads = Vec::new();
    for path in workload_files(&a)? {
        let mut w = Workload::load(&path)?;
        if let Some(d) = a.duration {
            w.test_duration_s = d;
        }
        if let Some(d) = a.warmup {
            w.warmup_duration_s = d;
        }
        if let Some(r) = a.rate {
            w.producer_rate = r;
        }
        w.validate()?;
        workloads.push(w);
    }
    let durability = match a.durability {
        DurabilityArg::Always => Durability::Always,
        DurabilityArg::Interval => Durability::Interval,
    };
    let label = a.label.clone().or_else(|| {
        a.bootstrap.is_none().then(|| {
            match durability {
                Durability::Always => "fsync",
                Durability::Interval => "interval",
            }
            .to_string()
        })
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    for w in &workloads {
        // A fresh broker per workload, so one run's data does not slow the next.
        let mut server = None;
        let _data;
        let bootstrap = match a.bootstrap {
            Some(addr) => addr,
            None => {
                let binary = match &a.binary {
                    Some(b) => b.clone(),
                    None => std::env::current_exe()?,
                };
                let parent = a.data_parent.clone().unwrap_or_else(std::env::temp_dir);
                let dir = tempfile_dir(&parent, &w.name)?;
                let s = Server::start(&binary, &dir.0, durability)?;
                eprintln!(
                    "started conflux (pid {}) on {} with data in {}",
                    s.pid(),
                    s.kafka,
                    dir.0.display()
                );
                let addr = s.kafka;
                server = Some(s);
                _data = dir;
                addr
            }
        };
        let opts = RunOptions {
            bootstrap,
            topic_prefix: format!("bench-{}-{}", w.name, std::process::id()),
            progress: !a.quiet,
        };
        let report = runtime.block_on(runner::run(w, &opts));
        if let Some(mut s) = server.take() {
            s.stop();
        }
        let mut report = report?;
        report.label = label.clone().unwrap_or_default();
        print!("{}", report.table());
        let stem = match &label {
            Some(l) => format!("{}-{l}", w.name),
            None => w.name.clone(),
        };
        let json = a.out.join(format!("{stem}.json"));
        write_json(&json, &report)?;
        let png = a.out.join(format!("{stem}.png"));
        if let Err(e) = crate::chart::draw(&report, &png) {
            eprintln!("chart not drawn: {e}");
        }
        println!("  report: {}  chart: {}\n", json.display(), png.display());
    }
    Ok(())
}

/// A data directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(parent: &Path, name: &str) -> std::io::Result<TempDir> {
    let dir = parent.join(format!(
        "conflux-bench-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}
