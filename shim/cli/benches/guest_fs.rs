//! File system speed inside the guest: the container's rootfs through the pod's virtio-fs share
//! (`RootfsMode::VirtioFs`) vs copied into an ext4 image on virtio-blk (`RootfsMode::Block`),
//! against the same script on the host. Each mode boots one microVM through the end-to-end driver
//! (`rust_vm_test_support::e2e`, like the `vm_run` bench): needs /dev/kvm, root, the installed
//! guest kernel and initramfs (scripts/setup.sh), and virtiofsd for the virtio-fs run.
//!
//!   cargo bench -p rust-vm-cli --bench guest_fs -- [--vmm PATH] [--host-only] [--share-only]
//!       [--virtiofs-cache never|auto|always] [--virtiofs-threads N]
//!
//! The rootfs (busybox) gets a 32 MiB `/padding` file and 500 files of 4 KiB under
//! `/small/d<i/100>/f<i>`; a busybox sh script times, with `/proc/uptime` (centiseconds), three
//! phases:
//!
//! * read — `busybox dd if=/padding of=/dev/null bs=1M`: sequential read, MiB/s (dd rather than
//!   `cat`, whose sendfile into /dev/null copies nothing and makes the host figure meaningless);
//! * meta — `ls -lR /small`: readdir and an lstat per file, files/s;
//! * open — `cat /small/*/*`: open, read 4 KiB and close per file, files/s.
//!
//! In the guest each phase runs once, on a cold guest page cache (the host's is warm: the driver
//! has just written the files, or the image). On the host (`$ROOT` names the tree, busybox the
//! applets) each phase repeats until it has taken 2 s, warm. Prints per phase the rate on the
//! host, over virtio-fs and over virtio-blk and the ratios, the "agent answered" and "container
//! created" milestones of both runs, and the CPU model. `--host-only` boots nothing.
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it boots no VM:
//! it only says so and succeeds.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rust_vm_sandbox::{RootfsMode, VirtiofsCache};
use rust_vm_test_support::e2e::{self, E2e};

const MIB: u64 = 1024 * 1024;
const PADDING: u64 = 32 * MIB;
const SMALL_FILES: usize = 500;
/// Centiseconds each phase repeats for on the host.
const HOST_MIN_CS: &str = "200";

/// Prints `phase <name> <iterations> <seconds>` per phase. `$ROOT` (empty in the guest) is the
/// tree's root; `$MIN_CS` (0 in the guest) how long a phase repeats for.
const SCRIPT: &str = r#"R=${ROOT:-}
MIN=${MIN_CS:-0}
now() { read -r up _ < /proc/uptime; s=${up%.*}; c=${up#*.}; T=$((s * 100 + 1$c - 100)); }
phase() {
  name=$1; shift; n=0; now; t0=$T
  while :; do
    "$@" || { echo "phase $name failed" >&2; exit 1; }
    n=$((n + 1)); now
    [ $((T - t0)) -ge "$MIN" ] && break
  done
  d=$((T - t0))
  echo "phase $name $n $((d / 100)).$((d % 100 / 10))$((d % 10))"
}
read_padding() { busybox dd if="$R/padding" of=/dev/null bs=1M 2> /dev/null; }
stat_tree() { ls -lR "$R/small" > /dev/null; }
open_files() { cat "$R"/small/*/* > /dev/null; }
phase read read_padding
phase meta stat_tree
phase open open_files
"#;

/// The phases, their unit and how much one iteration does in that unit.
const PHASES: [(&str, &str, f64); 3] = [
    ("read", "MiB/s", (PADDING / MIB) as f64),
    ("meta", "files/s", SMALL_FILES as f64),
    ("open", "files/s", SMALL_FILES as f64),
];

struct Args {
    vmm: Option<PathBuf>,
    host_only: bool,
    /// Only the virtio-fs run (to compare virtiofsd settings).
    share_only: bool,
    cache: VirtiofsCache,
    threads: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        vmm: None,
        host_only: false,
        share_only: false,
        cache: VirtiofsCache::default(),
        threads: rust_vm_sandbox::config::DEFAULT_VIRTIOFS_THREADS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--vmm" => args.vmm = Some(it.next().context("--vmm needs a path")?.into()),
            "--host-only" => args.host_only = true,
            "--share-only" => args.share_only = true,
            "--virtiofs-cache" => {
                let mode = it
                    .next()
                    .context("--virtiofs-cache needs never|auto|always")?;
                args.cache = serde_json::from_value(serde_json::Value::String(mode.clone()))
                    .with_context(|| format!("--virtiofs-cache {mode:?}: never, auto or always"))?;
            }
            "--virtiofs-threads" => {
                let n = it.next().context("--virtiofs-threads needs a number")?;
                args.threads = n
                    .parse()
                    .with_context(|| format!("--virtiofs-threads {n:?}"))?;
            }
            // cargo bench passes --bench.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?} (expected --vmm PATH, --host-only, --share-only, \
                 --virtiofs-cache MODE, --virtiofs-threads N)"
            ),
        }
    }
    Ok(args)
}

/// Per phase of [`PHASES`], its rate, from the script's output.
fn rates(stdout: &str) -> Result<Vec<f64>> {
    PHASES
        .iter()
        .map(|(name, _, per_iteration)| {
            let line = stdout
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .with_context(|| format!("no line for phase {name} in {stdout:?}"))?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                fields.len() == 4 && fields[0] == "phase",
                "bad phase line {line:?}"
            );
            let iterations: f64 = fields[2].parse().with_context(|| line.to_string())?;
            let seconds: f64 = fields[3].parse().with_context(|| line.to_string())?;
            // Under the clock's resolution: say at most one tick.
            Ok(iterations * per_iteration / seconds.max(0.01))
        })
        .collect()
}

fn host_rates() -> Result<Vec<f64>> {
    let tree = tempfile::Builder::new()
        .prefix("rust-vm-guest-fs-")
        .tempdir()?;
    let root = tree.path();
    rust_vm_test_support::bundle::busybox_rootfs(root);
    e2e::write_padding(root, PADDING)?;
    e2e::write_small_files(root, SMALL_FILES)?;
    let bin = root.join("bin");
    let out = Command::new(bin.join("busybox"))
        .args(["sh", "-c", SCRIPT])
        .env_clear()
        .env("PATH", &bin)
        .env("ROOT", root)
        .env("MIN_CS", HOST_MIN_CS)
        .output()
        .context("running the script on the host")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the script on the host: {}, stdout {stdout:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    rates(&stdout)
}

struct Guest {
    rates: Vec<f64>,
    agent_answered: Option<Duration>,
    created: Option<Duration>,
}

fn guest(mode: RootfsMode, args: &Args) -> Result<Guest> {
    let mut run = E2e::new(&["sh", "-c", SCRIPT]);
    if let Some(vmm) = &args.vmm {
        run.vmm = vmm.clone();
    }
    run.rootfs_mode = mode;
    run.virtiofs_cache = args.cache;
    run.virtiofs_threads = args.threads;
    run.rootfs_padding = PADDING;
    run.rootfs_small_files = SMALL_FILES;
    let report = e2e::run(&run)?;
    ensure!(
        report.exit_code == 0,
        "exit {}, stdout {:?}, stderr {:?}\nconsole:\n{}",
        report.exit_code,
        report.stdout,
        report.stderr,
        report.console
    );
    eprintln!("{mode:?}: {}", report.stdout.trim_end().replace('\n', "; "));
    Ok(Guest {
        rates: rates(&report.stdout)?,
        agent_answered: report.milestones.get(e2e::AGENT_ANSWERED).copied(),
        created: report.milestones.get(e2e::CREATED).copied(),
    })
}

fn seconds(at: Option<Duration>) -> String {
    at.map_or_else(
        || "not seen".into(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("guest_fs: not run (run it with `cargo bench`, as root, on a KVM host)");
        return Ok(());
    }
    let args = parse_args()?;
    let host = host_rates()?;
    let (fs, block) = if args.host_only {
        (None, None)
    } else {
        e2e::require_vm_host()?;
        let fs = guest(RootfsMode::VirtioFs, &args).context("the virtio-fs run")?;
        let block = if args.share_only {
            None
        } else {
            Some(guest(RootfsMode::Block, &args).context("the block run")?)
        };
        (Some(fs), block)
    };

    println!(
        "guest file system: virtio-fs share vs ext4 on virtio-blk vs the host; CPU: {}; host kind: {}",
        rust_vm_test_support::cpu_model(),
        rust_vm_sandbox::host::HostKind::detect()
    );
    println!(
        "{} MiB sequential read, {SMALL_FILES} files of 4 KiB; guest: one cold pass, host: warm, repeated for {} s; virtiofsd --cache={} --thread-pool-size={}",
        PADDING / MIB,
        HOST_MIN_CS.parse::<f64>().unwrap_or(0.0) / 100.0,
        args.cache.as_str(),
        args.threads
    );
    println!(
        "{:<6} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "phase", "unit", "host", "virtio-fs", "block", "fs/host", "blk/host", "fs/block"
    );
    let rate = |g: &Option<Guest>, i: usize| g.as_ref().map(|g| g.rates[i]);
    let cell = |v: Option<f64>| {
        v.map_or_else(
            || "-".into(),
            |v| {
                if v < 10.0 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.0}")
                }
            },
        )
    };
    // Guest-to-host ratios are tiny where guest ring 0 is emulated: show them as 1/N.
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && a / b < 0.1 => format!("1/{:.0}", b / a),
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    for (i, (name, unit, _)) in PHASES.iter().enumerate() {
        let (h, f, b) = (Some(host[i]), rate(&fs, i), rate(&block, i));
        println!(
            "{name:<6} {unit:>8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}",
            cell(h),
            cell(f),
            cell(b),
            ratio(f, h),
            ratio(b, h),
            ratio(f, b)
        );
    }
    for (mode, g) in [("virtio-fs", &fs), ("block", &block)] {
        if let Some(g) = g {
            println!(
                "{mode:<9}: {} {}, {} {}",
                e2e::AGENT_ANSWERED,
                seconds(g.agent_answered),
                e2e::CREATED,
                seconds(g.created)
            );
        }
    }
    Ok(())
}
