//! Wall time to each milestone of a busybox `echo hello` in its own microVM, through the one
//! end-to-end driver (`rust_vm_test_support::e2e`, also the `vm_e2e` test's): the sandbox library
//! starts our VMM with the installed guest kernel and guest root, the agent answers and is pinged
//! over vsock, the container runs, the sandbox shuts down. Milestones come from the VMM process in
//! /proc (polled every 5 ms), the guest console and the driver's own steps. Needs /dev/kvm, root,
//! the installed guest kernel, guest image and initramfs (scripts/setup.sh).
//!
//!   cargo bench -p rust-vm-cli --bench vm_run -- [--runs N] [--vmm PATH] [--kernel PATH]
//!       [--guest-root image|initramfs] [--guest-image PATH] [--initramfs PATH] [--compare]
//!       [--console DIR]
//!
//! Prints, per milestone, seconds since the sandbox was started (median and range over the runs).
//! With --compare each run boots once from the guest image and once from the initramfs, and the
//! table shows both medians and their ratio (image / initramfs). --console DIR keeps each run's
//! guest console there (`run-N-ROOT.log`), with the kernel's timestamps.
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it boots no VM:
//! it only says so and succeeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rust_vm_sandbox::GuestRoot;
use rust_vm_test_support::e2e::{self, E2e};

struct Args {
    runs: usize,
    run: E2e,
    compare: bool,
    console: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        runs: 1,
        run: E2e::new(&["echo", "hello"]),
        compare: false,
        console: None,
    };
    let mut it = std::env::args().skip(1);
    let path = |it: &mut std::iter::Skip<std::env::Args>, flag: &str| -> Result<PathBuf> {
        Ok(it
            .next()
            .with_context(|| format!("{flag} needs a path"))?
            .into())
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                let n = it.next().context("--runs needs a number")?;
                args.runs = n.parse().with_context(|| format!("--runs {n:?}"))?;
                ensure!(args.runs > 0, "--runs must be at least 1");
            }
            "--vmm" => args.run.vmm = path(&mut it, "--vmm")?,
            "--kernel" => args.run.kernel = path(&mut it, "--kernel")?,
            "--guest-image" => args.run.guest_image = path(&mut it, "--guest-image")?,
            "--initramfs" => args.run.initramfs = path(&mut it, "--initramfs")?,
            "--guest-root" => {
                let v = it.next().context("--guest-root needs image or initramfs")?;
                args.run.guest_root = v.parse::<GuestRoot>().map_err(anyhow::Error::msg)?;
            }
            "--compare" => args.compare = true,
            "--console" => args.console = Some(path(&mut it, "--console")?),
            // cargo bench passes --bench.
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?} (expected --runs N, --vmm PATH, --kernel PATH, \
                 --guest-root image|initramfs, --guest-image PATH, --initramfs PATH, --compare, \
                 --console DIR)"
            ),
        }
    }
    Ok(args)
}

type Milestones = BTreeMap<&'static str, Duration>;

fn run_once(run: &E2e, i: usize, console: Option<&PathBuf>) -> Result<Milestones> {
    let report = e2e::run(run).with_context(|| format!("run {}", i + 1))?;
    if let Some(dir) = console {
        let file = dir.join(format!("run-{}-{}.log", i + 1, run.guest_root));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&file, &report.console)
            .with_context(|| format!("writing {}", file.display()))?;
    }
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
        "run {} ({}): {:.1} s",
        i + 1,
        run.guest_root,
        report
            .milestones
            .get(e2e::VMM_GONE)
            .map_or(0.0, Duration::as_secs_f64)
    );
    Ok(report.milestones)
}

/// Median, min and max of `what` over the runs that saw it.
fn summary(all: &[Milestones], what: &str) -> Option<(f64, f64, f64)> {
    let mut times: Vec<f64> = all
        .iter()
        .filter_map(|m| m.get(what).map(Duration::as_secs_f64))
        .collect();
    if times.is_empty() {
        return None;
    }
    times.sort_by(f64::total_cmp);
    Some((times[times.len() / 2], times[0], times[times.len() - 1]))
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vm_run: not run (run it with `cargo bench`, as root, on a KVM host)");
        return Ok(());
    }
    let args = parse_args()?;
    e2e::require_vm_host()?;
    let host = rust_vm_sandbox::host::HostKind::detect();
    let cpu = rust_vm_test_support::cpu_model();
    println!(
        "vm back-end through the sandbox library, busybox `echo hello`; host: {host}; CPU: {cpu}"
    );
    println!(
        "kernel {}; seconds since the sandbox was started, {} run(s)",
        args.run.kernel.display(),
        args.runs
    );
    let mut run = args.run;
    if !args.compare {
        println!("guest root: {}", run.guest_root);
        let mut all = Vec::new();
        for i in 0..args.runs {
            all.push(run_once(&run, i, args.console.as_ref())?);
        }
        println!(
            "{:<32} {:>8} {:>8} {:>8}",
            "milestone", "median", "min", "max"
        );
        for what in e2e::milestone_names() {
            match summary(&all, what) {
                None => println!("{what:<32} {:>8}", "not seen"),
                Some((median, min, max)) => {
                    println!("{what:<32} {median:>8.1} {min:>8.1} {max:>8.1}")
                }
            }
        }
        return Ok(());
    }
    let (mut image, mut initramfs) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        run.guest_root = GuestRoot::Image;
        image.push(run_once(&run, i, args.console.as_ref())?);
        run.guest_root = GuestRoot::Initramfs;
        initramfs.push(run_once(&run, i, args.console.as_ref())?);
    }
    println!(
        "{:<32} {:>10} {:>10} {:>8}",
        "milestone (median s)", "image", "initramfs", "ratio"
    );
    for what in e2e::milestone_names() {
        let cell =
            |s: Option<(f64, f64, f64)>| s.map_or("-".to_string(), |s| format!("{:.1}", s.0));
        let (a, b) = (summary(&image, what), summary(&initramfs, what));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}", a.0 / b.0),
            _ => "-".to_string(),
        };
        println!("{what:<32} {:>10} {:>10} {ratio:>8}", cell(a), cell(b));
    }
    Ok(())
}
