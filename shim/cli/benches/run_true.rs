//! `rust-vm run` of busybox `true` with the namespaces back-end vs `runc run` on the same bundle,
//! side by side: `cargo bench -p rust-vm-cli --bench run_true` (root; runc and busybox-static
//! installed). Prints both medians and the ratio. Run by `cargo test --benches` (without the
//! `--bench` that `cargo bench` passes) it only says so and succeeds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rust_vm_test_support::BusyboxBundle;

const RUNS: usize = 30;

fn median(mut cmd: impl FnMut(usize) -> Command) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
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
    Ok(times[RUNS / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("run_true: not run (run it with `cargo bench`, as root)");
        return Ok(());
    }
    let rust_vm = PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"));
    // Built next to this benchmark (with --release under `cargo bench`) if missing.
    let agent = rust_vm_test_support::agent();
    let work = tempfile::tempdir()?;
    let bundle = BusyboxBundle::with_runtime_spec(&rust_vm, &["true"], |_| {});
    let dir = bundle.path();
    let rv_root = work.path().join("rust-vm");
    let runc_root = work.path().join("runc");
    let ours = median(|i| {
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
    let runc = median(|i| {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&runc_root)
            .args(["run", "--bundle"])
            .arg(dir)
            .arg(format!("r{i}"));
        c
    })?;
    println!("run of busybox true, median of {RUNS}");
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
