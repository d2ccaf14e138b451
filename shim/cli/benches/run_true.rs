//! `rust-vm run` of busybox `true`, side by side with its peer on the same bundle, medians and
//! the ratio (root; runc and busybox-static installed):
//!
//!     cargo bench -p rust-vm-cli --bench run_true                       # namespaces back-end vs runc, 30 runs
//!     cargo bench -p rust-vm-cli --bench run_true -- --vm [--runs N]    # vm back-end: guest image vs initramfs
//!
//! `--vm` boots a microVM per run (the installed kernel, guest image and initramfs, defaults
//! otherwise; 3 runs unless `--runs`): on an instruction-emulating host a run takes a minute or
//! two. Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it only
//! says so and succeeds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_vm_test_support::BusyboxBundle;

const RUNS: usize = 30;
const VM_RUNS: usize = 3;

fn median(
    runs: usize,
    mut cmd: impl FnMut(usize) -> Command,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let mut c = cmd(i);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        let started = Instant::now();
        let status = c.status()?;
        times.push(started.elapsed());
        if !status.success() {
            return Err(format!("{c:?} failed: {status}").into());
        }
    }
    times.sort();
    Ok(times[runs / 2])
}

/// `--runs N` from the command line, or `default`.
fn runs_arg(default: usize) -> Result<usize, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--runs") {
        None => Ok(default),
        Some(i) => match args.get(i + 1).and_then(|n| n.parse().ok()) {
            Some(n) if n > 0 => Ok(n),
            _ => Err("--runs needs a positive number".into()),
        },
    }
}

/// The vm back-end booting from the guest image and from the initramfs, run after run.
fn vm(rust_vm: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let runs = runs_arg(VM_RUNS)?;
    let work = tempfile::tempdir()?;
    let bundle = BusyboxBundle::with_runtime_spec(rust_vm, &["true"], |_| {});
    let dir = bundle.path();
    let root = work.path().join("root");
    let run = |guest_root: &'static str| {
        let root = root.clone();
        move |i: usize| {
            let mut c = Command::new(rust_vm);
            c.arg("--root")
                .arg(&root)
                .args(["--config", "/dev/null", "--guest-root", guest_root])
                .args(["run", "--bundle"])
                .arg(dir)
                .arg(format!("{guest_root}{i}"));
            eprintln!("run {} of {runs}, guest root {guest_root}", i + 1);
            c
        }
    };
    let image = median(runs, run("image"))?;
    let initramfs = median(runs, run("initramfs"))?;
    println!("rust-vm run of busybox true on the vm back-end, median of {runs}");
    println!(
        "  guest image:                   {:7.1} s",
        image.as_secs_f64()
    );
    println!(
        "  initramfs:                     {:7.1} s",
        initramfs.as_secs_f64()
    );
    println!(
        "  ratio image / initramfs:       {:7.2}",
        image.as_secs_f64() / initramfs.as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run_true: not run (run it with `cargo bench`, as root)");
        return Ok(());
    }
    let rust_vm = PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"));
    if std::env::args().any(|a| a == "--vm") {
        return vm(&rust_vm);
    }
    let runs = runs_arg(RUNS)?;
    // Built next to this benchmark (with --release under `cargo bench`) if missing.
    let agent = rust_vm_test_support::agent();
    let work = tempfile::tempdir()?;
    let bundle = BusyboxBundle::with_runtime_spec(&rust_vm, &["true"], |_| {});
    let dir = bundle.path();
    let rv_root = work.path().join("rust-vm");
    let runc_root = work.path().join("runc");
    let ours = median(runs, |i| {
        let mut c = Command::new(&rust_vm);
        c.arg("--root")
            .arg(&rv_root)
            .args([
                "--config",
                "/dev/null",
                "--backend",
                "namespaces",
                "--agent",
            ])
            .arg(&agent)
            .args(["run", "--bundle"])
            .arg(dir)
            .arg(format!("b{i}"));
        c
    })?;
    let runc = median(runs, |i| {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&runc_root)
            .args(["run", "--bundle"])
            .arg(dir)
            .arg(format!("r{i}"));
        c
    })?;
    println!("run of busybox true, median of {runs}");
    println!(
        "  rust-vm (namespaces back-end): {:7.1} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "  runc:                          {:7.1} ms",
        runc.as_secs_f64() * 1e3
    );
    println!(
        "  ratio rust-vm / runc:          {:7.2}",
        ours.as_secs_f64() / runc.as_secs_f64()
    );
    Ok(())
}
