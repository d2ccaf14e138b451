//! Host memory of idle pods on the vm back-end: `rust-vm create` of a busybox container (the VM
//! booted, the agent answered, the container made and held before `execve`), then the resident
//! (RSS) and proportional (PSS) set of each pod's processes from /proc/PID/smaps_rollup: the VMM,
//! including the guest RAM it touched, and the pod's virtiofsd (which maps the same guest memory,
//! so PSS splits those pages between the two). PSS also splits pages that several pods share: the
//! host's page cache of the guest image, the VMM's and virtiofsd's code.
//!
//!   cargo bench -p rust-vm-cli --bench pod_memory -- [--pods N] [--guest-root image|initramfs]...
//!
//! For each guest root (default both, image first) it measures one pod alone, then N pods at once
//! (default 10), and prints the figures per pod with the ratio to the other root. Needs root,
//! /dev/kvm and what scripts/setup.sh installs; N pods boot together, so on an
//! instruction-emulating host the N-pod step takes minutes (the agent timeout is raised to match).
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it boots
//! nothing: it only says so and succeeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rust_vm_test_support::BusyboxBundle;

/// Seconds each pod may take to answer while N boot at once on few cores.
const AGENT_TIMEOUT_SECS: &str = "1800";

struct Args {
    pods: usize,
    roots: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        pods: 10,
        roots: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pods" => {
                let n = it.next().context("--pods needs a number")?;
                args.pods = n.parse().with_context(|| format!("--pods {n:?}"))?;
                ensure!(args.pods > 0, "--pods must be at least 1");
            }
            "--guest-root" => args
                .roots
                .push(it.next().context("--guest-root needs image or initramfs")?),
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.roots.is_empty() {
        args.roots = vec!["image".into(), "initramfs".into()];
    }
    Ok(args)
}

/// RSS and PSS in KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    pss_kib: u64,
}

impl std::ops::AddAssign for Footprint {
    fn add_assign(&mut self, other: Footprint) {
        self.rss_kib += other.rss_kib;
        self.pss_kib += other.pss_kib;
    }
}

fn rollup(pid: u32) -> Result<Footprint> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading smaps_rollup of {pid}"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Footprint {
        rss_kib: field("Rss:"),
        pss_kib: field("Pss:"),
    })
}

/// The VMM and virtiofsd of the pod whose sandbox directory is `sandbox`: the processes whose
/// command line names a file in it.
fn pod_processes(sandbox: &Path) -> Result<Vec<(u32, String)>> {
    let needle = sandbox.display().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let name = words
            .first()
            .and_then(|w| Path::new(w).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if ["rust-vm-vmm", "virtiofsd"].contains(&name.as_str())
            && words.iter().any(|w| w.contains(&needle))
        {
            found.push((pid, name));
        }
    }
    Ok(found)
}

/// Per-process-kind footprint of one pod: (VMM, virtiofsd).
fn pod_footprint(sandbox: &Path) -> Result<(Footprint, Footprint)> {
    let (mut vmm, mut fsd) = (Footprint::default(), Footprint::default());
    let processes = pod_processes(sandbox)?;
    ensure!(
        processes.iter().any(|(_, n)| n == "rust-vm-vmm"),
        "no VMM found for {}",
        sandbox.display()
    );
    for (pid, name) in processes {
        let f = rollup(pid)?;
        if name == "rust-vm-vmm" {
            vmm += f;
        } else {
            fsd += f;
        }
    }
    Ok((vmm, fsd))
}

struct Measured {
    pods: usize,
    vmm: Footprint,
    virtiofsd: Footprint,
}

impl Measured {
    fn per_pod(&self, f: Footprint) -> (f64, f64) {
        let n = self.pods as f64 * 1024.0;
        (f.rss_kib as f64 / n, f.pss_kib as f64 / n)
    }

    fn total_pss_mib(&self) -> f64 {
        (self.vmm.pss_kib + self.virtiofsd.pss_kib) as f64 / 1024.0 / self.pods as f64
    }
}

fn measure(
    rust_vm: &Path,
    bundle: &Path,
    root: &Path,
    guest_root: &str,
    pods: usize,
) -> Result<Measured> {
    let ids: Vec<String> = (0..pods)
        .map(|i| format!("{guest_root}-{pods}-{i}"))
        .collect();
    let cli = |args: &[&str]| {
        let mut c = Command::new(rust_vm);
        c.arg("--root")
            .arg(root)
            .args(["--config", "/dev/null", "--guest-root", guest_root])
            .args(["--agent-timeout", AGENT_TIMEOUT_SECS])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    };
    let started = Instant::now();
    let mut creating = Vec::new();
    for id in &ids {
        let mut c = cli(&["create", "--bundle"]);
        c.arg(bundle).arg(id);
        creating.push((id, c.spawn().context("starting rust-vm create")?));
    }
    let mut failed = None;
    for (id, mut child) in creating {
        let status = child.wait()?;
        if !status.success() && failed.is_none() {
            failed = Some(format!("rust-vm create {id}: {status}"));
        }
    }
    eprintln!(
        "{pods} pod(s) from the {guest_root} created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut result = Measured {
        pods,
        vmm: Footprint::default(),
        virtiofsd: Footprint::default(),
    };
    let mut error = failed.map(anyhow::Error::msg);
    if error.is_none() {
        for id in &ids {
            match pod_footprint(&root.join(id).join("sandbox")) {
                Ok((vmm, fsd)) => {
                    result.vmm += vmm;
                    result.virtiofsd += fsd;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }
    for id in &ids {
        let _ = cli(&["delete", "--force", id])
            .stderr(Stdio::null())
            .status();
    }
    match error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pod_memory: not run (run it with `cargo bench`, as root)");
        return Ok(());
    }
    let args = parse_args()?;
    let rust_vm = PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"));
    let bundle = BusyboxBundle::with_runtime_spec(&rust_vm, &["true"], |_| {});
    let work = tempfile::tempdir()?;
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mut rows = Vec::new();
    for guest_root in &args.roots {
        for pods in [1, args.pods] {
            if pods == 1
                && args.pods == 1
                && rows
                    .iter()
                    .any(|(r, m): &(String, Measured)| r == guest_root && m.pods == 1)
            {
                continue;
            }
            let m = measure(
                &rust_vm,
                bundle.path(),
                &work.path().join("root"),
                guest_root,
                pods,
            )?;
            rows.push((guest_root.clone(), m));
        }
    }
    println!("idle pod footprint on the host, MiB per pod ({cpu}; 256 MiB guests, defaults)");
    println!(
        "  {:<10} {:>4}  {:>8} {:>8}  {:>10} {:>10}  {:>9}",
        "root", "pods", "VMM RSS", "VMM PSS", "vfsd RSS", "vfsd PSS", "PSS total"
    );
    for (root, m) in &rows {
        let (vr, vp) = m.per_pod(m.vmm);
        let (fr, fp) = m.per_pod(m.virtiofsd);
        println!(
            "  {root:<10} {:>4}  {vr:>8.1} {vp:>8.1}  {fr:>10.1} {fp:>10.1}  {:>9.1}",
            m.pods,
            m.total_pss_mib()
        );
    }
    for pods in [1, args.pods] {
        let pss = |root: &str| {
            rows.iter()
                .find(|(r, m)| r == root && m.pods == pods)
                .map(|(_, m)| m.total_pss_mib())
        };
        if let (Some(image), Some(initramfs)) = (pss("image"), pss("initramfs")) {
            println!(
                "  ratio image / initramfs, PSS per pod, {pods} pod(s): {:.2}",
                image / initramfs
            );
        }
    }
    Ok(())
}
