//! `rust-vm run` of busybox `true` with the namespaces back-end vs `runc run` on the same bundle,
//! side by side: `cargo bench -p rust-vm-cli --bench run_true` (root; runc and busybox-static
//! installed). Prints both medians and the ratio.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn bundle(dir: &Path, rust_vm: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox"))?;
    std::os::unix::fs::symlink("busybox", bin.join("true"))?;
    let status = Command::new(rust_vm)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .status()?;
    if !status.success() {
        return Err("rust-vm spec failed".into());
    }
    let path = dir.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["args"] = serde_json::json!(["true"]);
    std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    Ok(())
}

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

fn agent_next_to(rust_vm: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let agent = rust_vm.with_file_name("rust-vm-agent");
    if !agent.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "rust-vm-agent"])
            .status()?;
        if !status.success() {
            return Err("cargo build --release -p rust-vm-agent failed".into());
        }
    }
    Ok(agent)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rust_vm = PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"));
    let agent = agent_next_to(&rust_vm)?;
    let work = tempfile::tempdir()?;
    let dir = work.path().join("bundle");
    bundle(&dir, &rust_vm)?;
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
            .arg(&dir)
            .arg(format!("b{i}"));
        c
    })?;
    let runc = median(|i| {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&runc_root)
            .args(["run", "--bundle"])
            .arg(&dir)
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
