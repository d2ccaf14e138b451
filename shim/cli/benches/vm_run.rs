//! Wall time to each milestone of `rust-vm run` with the `vm` back-end: a busybox bundle runs
//! `echo hello` in its own microVM. Needs /dev/kvm, root, the installed guest kernel and
//! initramfs (scripts/setup.sh).
//!
//!   cargo bench -p rust-vm-cli --bench vm_run -- [--runs N] [--vmm PATH]
//!
//! The real `rust-vm` binary runs; this program only watches it from outside, polling every
//! 5 ms: the VMM process appearing and disappearing in /proc, the guest console the VMM writes
//! (kernel and agent lines), the runtime's log and the container's stdout. Prints, per milestone,
//! seconds since `rust-vm run` was started (median and range over the runs).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

const ID: &str = "bench";
const POLL: Duration = Duration::from_millis(5);

/// Milestones in the order they happen, with where each is seen.
const MILESTONES: [&str; 9] = [
    "VMM process started",
    "kernel banner",
    "/init started (kernel)",
    "agent listening on vsock",
    "container created (agent)",
    "container started (agent)",
    "container output read",
    "container exited (runtime)",
    "VMM process gone",
];
const RUN_RETURNED: &str = "rust-vm run returned";

/// Console and runtime-log lines that mark a milestone.
const LINE_MARKS: [(&str, &str); 6] = [
    ("kernel banner", "Linux version"),
    ("/init started (kernel)", "Run /init as init process"),
    ("agent listening on vsock", "listening on vsock"),
    ("container created (agent)", "created container"),
    ("container started (agent)", "started container"),
    ("container exited (runtime)", "exited with"),
];

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

fn rust_vm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"))
}

/// The VMM next to `rust-vm`, as the runtime itself would resolve it.
fn default_vmm() -> Result<PathBuf> {
    let dir = rust_vm()
        .parent()
        .context("rust-vm has no directory")?
        .to_path_buf();
    for candidate in [dir.join("rust-vm-vmm"), dir.join("../rust-vm-vmm")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "rust-vm-vmm not found next to {}: cargo build --release -p rust-vm-vmm, or pass --vmm",
        dir.display()
    )
}

fn busybox_bundle(dir: &Path) -> Result<()> {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join("rootfs").join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    for applet in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let spec = Command::new(rust_vm())
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()?;
    ensure!(
        spec.status.success(),
        "rust-vm spec: {}",
        String::from_utf8_lossy(&spec.stderr)
    );
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["args"] = serde_json::json!(["echo", "hello"]);
    config["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// Pids of `rust-vm-vmm` processes whose command line mentions `needle`.
fn vmm_pids(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = raw.split(|&b| b == 0).map(String::from_utf8_lossy);
            let is_vmm = args.next().is_some_and(|a| a.ends_with("rust-vm-vmm"));
            is_vmm && args.any(|a| a.contains(needle))
        })
        .collect()
}

type Marks = Arc<Mutex<BTreeMap<&'static str, Duration>>>;

fn mark(marks: &Marks, what: &'static str, at: Duration) {
    marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(what)
        .or_insert(at);
}

/// Watches the VMM process, the console and the runtime log until `done`.
fn watch(root: PathBuf, log: PathBuf, t0: Instant, marks: Marks, done: Arc<AtomicBool>) {
    let console = root.join(ID).join("sandbox/console.log");
    let needle = root.display().to_string();
    let mut vmm: Option<u32> = None;
    let mut seen_text = String::new();
    while !done.load(Ordering::Relaxed) {
        let now = t0.elapsed();
        match vmm {
            None => {
                if let Some(&pid) = vmm_pids(&needle).first() {
                    vmm = Some(pid);
                    mark(&marks, "VMM process started", now);
                }
            }
            Some(pid) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    mark(&marks, "VMM process gone", now);
                }
            }
        }
        // The console is deleted with the sandbox; keep what was read.
        for path in [&console, &log] {
            if let Ok(text) = std::fs::read_to_string(path) {
                seen_text.push_str(&text);
            }
        }
        for (what, needle) in LINE_MARKS {
            if seen_text.contains(needle) {
                mark(&marks, what, now);
            }
        }
        // Only the last read matters for the next round (the files only grow).
        seen_text.clear();
        thread::sleep(POLL);
    }
}

fn one_run(vmm: &Path) -> Result<BTreeMap<&'static str, Duration>> {
    let work = tempfile::tempdir()?;
    let bundle = work.path().join("bundle");
    busybox_bundle(&bundle)?;
    let root = work.path().join("root");
    std::fs::create_dir(&root)?;
    let log = work.path().join("runtime.log");
    let marks: Marks = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut child = Command::new(rust_vm())
        .arg("--root")
        .arg(&root)
        .args(["--config", "/dev/null", "--backend", "vm", "--vmm"])
        .arg(vmm)
        .args(["--log-level", "info", "--log"])
        .arg(&log)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(ID)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rust-vm run")?;
    let watcher = {
        let (root, log, marks, done) = (root.clone(), log.clone(), marks.clone(), done.clone());
        thread::spawn(move || watch(root, log, t0, marks, done))
    };
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut output = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.extend_from_slice(&buf[..n]);
        if output.ends_with(b"\n") {
            mark(&marks, "container output read", t0.elapsed());
        }
    }
    let out = child.wait_with_output()?;
    mark(&marks, RUN_RETURNED, t0.elapsed());
    // One more round for the VMM's disappearance, if it was not seen yet.
    thread::sleep(POLL * 4);
    done.store(true, Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    ensure!(
        out.status.success() && output == b"hello\n",
        "rust-vm run failed ({}): stdout {:?}\nstderr: {}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&output),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let marks = marks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(marks)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    ensure!(Path::new("/dev/kvm").exists(), "/dev/kvm missing");
    let vmm = match args.vmm {
        Some(path) => path,
        None => default_vmm()?,
    };
    let host = rust_vm_sandbox::host::HostKind::detect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!("rust-vm run (vm back-end), busybox `echo hello`; host: {host}; CPU: {cpu}");
    println!("seconds since `rust-vm run` started, {} run(s)", args.runs);
    let mut all: Vec<BTreeMap<&'static str, Duration>> = Vec::new();
    for i in 0..args.runs {
        let marks = one_run(&vmm).with_context(|| format!("run {}", i + 1))?;
        eprintln!(
            "run {}: {:.1} s",
            i + 1,
            marks.get(RUN_RETURNED).map_or(0.0, Duration::as_secs_f64)
        );
        all.push(marks);
    }
    println!(
        "{:<30} {:>8} {:>8} {:>8}",
        "milestone", "median", "min", "max"
    );
    for what in MILESTONES.iter().copied().chain([RUN_RETURNED]) {
        let mut times: Vec<f64> = all
            .iter()
            .filter_map(|m| m.get(what).map(Duration::as_secs_f64))
            .collect();
        if times.is_empty() {
            println!("{what:<30} {:>8}", "not seen");
            continue;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{what:<30} {median:>8.1} {:>8.1} {:>8.1}",
            times[0],
            times[times.len() - 1]
        );
    }
    Ok(())
}
