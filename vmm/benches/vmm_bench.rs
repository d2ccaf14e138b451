//! vmm_bench: prints the VMM's memory overhead while a guest runs and its CPU time from exec to
//! the first KVM_RUN. A bench target without the test harness; it starts the `rust-vm-vmm` cargo
//! built with it (release under `cargo bench`):
//!
//!     cargo bench -p rust-vm-vmm --bench vmm_bench
//!
//! Environment: RUST_VM_VMM (another VMM binary), RUST_VM_KERNEL (guest kernel, default
//! /var/lib/rust-vm/vmlinux), BENCH_RUNS (start-up samples, default 20). Run by `cargo test
//! --benches` (without the `--bench` that `cargo bench` passes) it starts no VM: it only says so
//! and succeeds.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm::arch::layout::ram_regions;
use vmm::test_guest::{elf_image, print_and_idle, print_and_reset};

#[path = "common/smaps.rs"]
mod smaps;
use smaps::rss_kib;

const MEM_MIB: u64 = 256;
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const FIRST_RUN_MARKER: &str = "first KVM_RUN: process CPU time ";

struct Guest {
    name: &'static str,
    kernel: PathBuf,
    /// Serial output that shows the guest is up and running.
    ready: &'static str,
    cmdline: &'static str,
}

fn vmm_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUST_VM_VMM") {
        return Ok(PathBuf::from(path));
    }
    Ok(PathBuf::from(env!("CARGO_BIN_EXE_rust-vm-vmm")))
}

fn spawn(vmm: &Path, guest: &Guest, log_level: &str) -> Result<Child> {
    Command::new(vmm)
        .arg("--kernel")
        .arg(&guest.kernel)
        .args(["--mem-mib", &MEM_MIB.to_string(), "--log-level", log_level])
        .args(["--cmdline", guest.cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", vmm.display()))
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// CPU time (µs) the VMM reports at its first KVM_RUN.
fn first_kvm_run_us(vmm: &Path, guest: &Guest) -> Result<u64> {
    let mut child = spawn(vmm, guest, "debug")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut found = None;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if let Some((_, rest)) = line.split_once(FIRST_RUN_MARKER) {
            found = rest.trim_end_matches(" us").parse().ok();
            break;
        }
    }
    stop(child);
    found.context("the VMM never logged its first KVM_RUN")
}

/// Waits until the guest prints `ready`, then reads the VMM's smaps.
fn memory_while_running(vmm: &Path, guest: &Guest) -> Result<(u64, u64)> {
    let mut child = spawn(vmm, guest, "warn")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut serial = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&serial).contains(guest.ready) {
        if Instant::now() > deadline {
            stop(child);
            bail!(
                "{} did not print {:?} within {READY_TIMEOUT:?}",
                guest.name,
                guest.ready
            );
        }
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            stop(child);
            bail!("{} ended before printing {:?}", guest.name, guest.ready);
        }
        serial.extend_from_slice(&buf[..n]);
    }
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", child.id()));
    stop(child);
    let smaps = smaps.context("cannot read the VMM's smaps")?;
    // Guest RAM is the anonymous mappings sized like the configured regions.
    let guest_sizes: Vec<u64> = ram_regions(MEM_MIB << 20).iter().map(|r| r.1).collect();
    let vmm_kib = rss_kib(&smaps, |size| !guest_sizes.contains(&size));
    let guest_kib = rss_kib(&smaps, |size| guest_sizes.contains(&size));
    Ok((vmm_kib, guest_kib))
}

fn median(mut samples: Vec<u64>) -> (u64, u64, u64) {
    samples.sort_unstable();
    (
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
    )
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vmm_bench: not run (run it with `cargo bench` on a KVM host)");
        return Ok(());
    }
    let vmm = vmm_binary()?;
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(1);
    let scratch = std::env::temp_dir().join(format!("vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let reset_guest = scratch.join("reset.elf");
    std::fs::write(&reset_guest, elf_image(&print_and_reset("ready\n")))?;
    let idle_guest = scratch.join("idle.elf");
    std::fs::write(&idle_guest, elf_image(&print_and_idle("ready\n")))?;
    let kernel = std::env::var_os("RUST_VM_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/rust-vm/vmlinux"));

    let tiny = Guest {
        name: "tiny guest",
        kernel: reset_guest,
        ready: "ready\n",
        cmdline: "",
    };
    let idle = Guest {
        name: "idle tiny guest",
        kernel: idle_guest,
        ready: "ready\n",
        cmdline: "",
    };
    let linux = Guest {
        name: "guest kernel",
        kernel: kernel.clone(),
        ready: "Zone ranges:",
        cmdline: "console=ttyS0 earlyprintk=serial,ttyS0,115200 noxsave reboot=k panic=1",
    };

    let size = std::fs::metadata(&vmm)?.len();
    println!("VMM binary: {} ({} KiB)", vmm.display(), size / 1024);
    println!("guest memory: {MEM_MIB} MiB, 1 vCPU, conservative template");
    println!();
    println!("CPU time from exec to the first KVM_RUN ({runs} runs; goal <= 5 ms):");
    let mut guests = vec![&tiny];
    if kernel.is_file() {
        guests.push(&linux);
    } else {
        println!("  (guest kernel {} missing: skipped)", kernel.display());
    }
    for guest in &guests {
        let samples = (0..runs)
            .map(|_| first_kvm_run_us(&vmm, guest))
            .collect::<Result<Vec<_>>>()?;
        let (min, med, max) = median(samples);
        println!(
            "  {:<16} min {:>5.2} ms  median {:>5.2} ms  max {:>5.2} ms",
            guest.name,
            min as f64 / 1000.0,
            med as f64 / 1000.0,
            max as f64 / 1000.0
        );
    }
    println!();
    println!("VMM RSS excluding guest RAM, while the guest runs (goal <= 5 MiB):");
    let mut guests = vec![&idle];
    if kernel.is_file() {
        guests.push(&linux);
    }
    for guest in guests {
        let (vmm_kib, guest_kib) = memory_while_running(&vmm, guest)?;
        println!(
            "  {:<16} VMM {:>6.2} MiB   (guest RAM touched: {:.1} MiB)",
            guest.name,
            vmm_kib as f64 / 1024.0,
            guest_kib as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
