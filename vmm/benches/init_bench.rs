//! init_bench: boots the guest kernel with the test initramfs (`vmm::test_initramfs`) and prints
//! the wall time from VMM start to each boot milestone on the serial console, up to `/init`'s
//! marker and the VMM's exit. A bench target without the test harness; it starts the
//! `rust-vm-vmm` cargo built with it (release under `cargo bench`):
//!
//!     cargo bench -p rust-vm-vmm --bench init_bench
//!
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it boots no
//! VM: it only says so and succeeds.
//!
//! Environment: RUST_VM_VMM (VMM binary), RUST_VM_KERNEL (default /var/lib/rust-vm/vmlinux),
//! BENCH_RUNS (default 3), BENCH_MEM_MIB (default 128), BENCH_VCPUS (default 1),
//! BENCH_CMDLINE (default: the PVM-host command line of docs/pvm-host-boot.md).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm::test_initramfs::{initramfs, INIT_MARKER};

use vmm::config::host::EMULATING_HOST_CMDLINE;
use vmm::config::DEFAULT_CMDLINE;
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// (label, text of the serial line that marks it).
const MILESTONES: [(&str, &str); 6] = [
    ("banner", "Linux version"),
    ("CPUs up", "smp: Brought up"),
    ("initramfs unpacked", "Freeing initrd memory"),
    ("initcalls done", "Freeing unused kernel image (initmem)"),
    ("/init started", "Run /init as init process"),
    ("/init marker", INIT_MARKER),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={value:?} is not valid")),
        Err(_) => Ok(default),
    }
}

fn vmm_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUST_VM_VMM") {
        return Ok(PathBuf::from(path));
    }
    Ok(PathBuf::from(env!("CARGO_BIN_EXE_rust-vm-vmm")))
}

struct Run {
    /// Seconds to each milestone, `None` if it never appeared.
    milestones: Vec<Option<f64>>,
    exit: f64,
    status: Option<i32>,
    /// The VMM's reflection summary, if it logged one.
    reflections: Option<String>,
}

fn boot_once(vmm: &PathBuf, args: &[String]) -> Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(vmm)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", vmm.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((start.elapsed().as_secs_f64(), line)).is_err() {
                break;
            }
        }
    });
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_once("] ")
                    .map(|(_, m)| m.to_string())
                    .filter(|m| m.contains("reflected"))
            })
    });

    let mut milestones = vec![None; MILESTONES.len()];
    let deadline = start + RUN_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                for (slot, (_, text)) in milestones.iter_mut().zip(MILESTONES) {
                    if slot.is_none() && line.contains(text) {
                        *slot = Some(at);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("cannot wait for the VMM")?.code();
    let exit = start.elapsed().as_secs_f64();
    let reflections = log.join().ok().flatten();
    Ok(Run {
        milestones,
        exit,
        status,
        reflections,
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn fmt_secs(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("init_bench: not run (run it with `cargo bench` on a KVM host)");
        return Ok(());
    }
    let vmm = vmm_binary()?;
    let kernel =
        std::env::var("RUST_VM_KERNEL").unwrap_or_else(|_| "/var/lib/rust-vm/vmlinux".into());
    let runs: usize = env_or("BENCH_RUNS", 3)?;
    let mem_mib: u64 = env_or("BENCH_MEM_MIB", 128)?;
    let vcpus: u32 = env_or("BENCH_VCPUS", 1)?;
    let cmdline = std::env::var("BENCH_CMDLINE").unwrap_or_else(|_| {
        format!("{DEFAULT_CMDLINE} earlyprintk=serial,ttyS0 {EMULATING_HOST_CMDLINE}")
    });

    let initrd =
        std::env::temp_dir().join(format!("rust-vm-init-bench-{}.cpio", std::process::id()));
    std::fs::write(&initrd, initramfs()).context("cannot write the test initramfs")?;
    let args: Vec<String> = [
        "--kernel",
        &kernel,
        "--initrd",
        &initrd.to_string_lossy(),
        "--mem-mib",
        &mem_mib.to_string(),
        "--vcpus",
        &vcpus.to_string(),
        "--cpu-template",
        "conservative",
        "--log-level",
        "info",
        "--cmdline",
        &cmdline,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    println!("init_bench: {kernel}, {vcpus} vCPU(s), {mem_mib} MiB, {runs} run(s)");
    println!("cmdline: {cmdline}");
    let mut results = Vec::with_capacity(runs);
    for i in 0..runs {
        let run = boot_once(&vmm, &args)?;
        let times: Vec<String> = MILESTONES
            .iter()
            .zip(&run.milestones)
            .map(|((label, _), t)| format!("{label} {}", fmt_secs(*t)))
            .collect();
        println!(
            "run {}: {}, VMM exit {:.1} (status {:?}); {}",
            i + 1,
            times.join(", "),
            run.exit,
            run.status,
            run.reflections
                .as_deref()
                .unwrap_or("no emulation failures reflected")
        );
        results.push(run);
    }
    let _ = std::fs::remove_file(&initrd);

    println!("\nmilestone                 median s (of runs that reached it)");
    for (i, (label, text)) in MILESTONES.iter().enumerate() {
        let reached: Vec<f64> = results.iter().filter_map(|r| r.milestones[i]).collect();
        println!(
            "{label:<22} {:>8}   ({}/{runs}; serial line \"{text}\")",
            fmt_secs(median(reached.clone())),
            reached.len()
        );
    }
    println!(
        "{:<22} {:>8}",
        "VMM exit",
        fmt_secs(median(results.iter().map(|r| r.exit).collect()))
    );
    if results
        .iter()
        .any(|r| r.milestones[MILESTONES.len() - 1].is_none())
    {
        bail!("the /init marker did not appear in every run");
    }
    Ok(())
}
