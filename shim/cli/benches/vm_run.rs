//! Wall time to each milestone of a busybox `echo hello` in its own microVM, through the one
//! end-to-end driver (`rust_vm_test_support::e2e`, also the `vm_e2e` test's): the sandbox library
//! starts our VMM with the installed guest kernel and initramfs, the agent answers and is pinged
//! over vsock, the container runs from the boot disk, the sandbox shuts down. Milestones come from
//! the VMM process in /proc (polled every 5 ms), the guest console and the driver's own steps.
//! Needs /dev/kvm, root, the installed guest kernel and initramfs (scripts/setup.sh).
//!
//!   cargo bench -p rust-vm-cli --bench vm_run -- [--runs N] [--vmm PATH]
//!
//! Prints, per milestone, seconds since the sandbox was started (median and range over the runs).
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it boots no VM:
//! it only says so and succeeds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rust_vm_test_support::e2e::{self, E2e};

struct Args {
    runs: usize,
    vmm: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { runs: 1, vmm: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                let n = it.next().context("--runs needs a number")?;
                args.runs = n.parse().with_context(|| format!("--runs {n:?}"))?;
                ensure!(args.runs > 0, "--runs must be at least 1");
            }
            "--vmm" => args.vmm = Some(it.next().context("--vmm needs a path")?.into()),
            // cargo bench passes --bench.
            "--bench" => {}
            other => bail!("unknown argument {other:?} (expected --runs N, --vmm PATH)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vm_run: not run (run it with `cargo bench`, as root, on a KVM host)");
        return Ok(());
    }
    let args = parse_args()?;
    e2e::require_vm_host()?;
    let mut run = E2e::new(&["echo", "hello"]);
    if let Some(vmm) = args.vmm {
        run.vmm = vmm;
    }
    let host = rust_vm_sandbox::host::HostKind::detect();
    let cpu = rust_vm_test_support::cpu_model();
    println!(
        "vm back-end through the sandbox library, busybox `echo hello`; host: {host}; CPU: {cpu}"
    );
    println!(
        "seconds since the sandbox was started, {} run(s)",
        args.runs
    );
    let mut all = Vec::new();
    for i in 0..args.runs {
        let report = e2e::run(&run).with_context(|| format!("run {}", i + 1))?;
        ensure!(
            report.exit_code == 0 && report.stdout == "hello\n",
            "run {}: exit {}, stdout {:?}, stderr {:?}\nconsole:\n{}",
            i + 1,
            report.exit_code,
            report.stdout,
            report.stderr,
            report.console
        );
        eprintln!(
            "run {}: {:.1} s",
            i + 1,
            report
                .milestones
                .get(e2e::VMM_GONE)
                .map_or(0.0, Duration::as_secs_f64)
        );
        all.push(report.milestones);
    }
    println!(
        "{:<32} {:>8} {:>8} {:>8}",
        "milestone", "median", "min", "max"
    );
    for what in e2e::milestone_names() {
        let mut times: Vec<f64> = all
            .iter()
            .filter_map(|m| m.get(what).map(Duration::as_secs_f64))
            .collect();
        if times.is_empty() {
            println!("{what:<32} {:>8}", "not seen");
            continue;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{what:<32} {median:>8.1} {:>8.1} {:>8.1}",
            times[0],
            times[times.len() - 1]
        );
    }
    Ok(())
}
