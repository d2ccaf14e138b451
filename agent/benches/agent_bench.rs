//! agent_bench: create + start + wait (+ remove) of busybox `/bin/true`, through the agent in
//! host mode over its Unix socket, against Debian's `crun run` on the same bundle. Runs are
//! interleaved; prints both medians and the ratio agent/crun.
//!
//! Both sides run without cgroups (`--no-cgroups`, `crun --cgroup-manager=disabled`): the host
//! has cgroup v1, which the agent does not drive. crun refuses to run at all on a hybrid host
//! whose cgroup2 mount has controllers, so the benchmark first moves itself into a private mount
//! namespace without `/sys/fs/cgroup/unified`; both runtimes run in that namespace.
//! A bench target without the test harness, built with the bench profile (optimized), as root:
//!   cargo bench -p rust-vm-agent --bench agent_bench -- --runs 50
//! Run by `cargo test --benches` (without the `--bench` that `cargo bench` passes) it only says
//! so and succeeds.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use oci_spec::runtime::Spec;
use rust_vm_protocol::{Client, CreateContainer, RootfsSource};
use rust_vm_test_support::{spec_json, BusyboxBundle};

#[derive(Debug, Parser)]
#[command(name = "agent_bench")]
struct Args {
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Measured runs per runtime.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Unmeasured warm-up runs per runtime.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The agent binary [default: the rust-vm-agent cargo built with this benchmark].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// The crun binary.
    #[arg(long, default_value = "crun")]
    crun: PathBuf,
}

/// The shared test spec, as this benchmark has always run it: `/bin/true` in a read-only
/// rootfs (a relative root: crun reads it from the bundle), no new privileges.
fn bench_spec() -> serde_json::Value {
    let mut spec = spec_json(&["/bin/true"]);
    spec["root"] = serde_json::json!({ "path": "rootfs", "readonly": true });
    spec["hostname"] = serde_json::json!("bench");
    spec["process"]["noNewPrivileges"] = serde_json::json!(true);
    spec
}

struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start_agent(binary: &Path, dir: &Path) -> anyhow::Result<(AgentProcess, Client)> {
    let socket = dir.join("agent.sock");
    let child = Command::new(binary)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--no-cgroups", "--log-level", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let agent = AgentProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        ensure!(
            Instant::now() < deadline,
            "the agent did not start listening"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let client = Client::connect(&format!("unix:{}", socket.display()))?;
    Ok((agent, client))
}

fn agent_run(client: &Client, spec: &Spec, rootfs: &Path, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    client.create_container(CreateContainer {
        container_id: id.to_owned(),
        spec: Box::new(spec.clone()),
        rootfs: RootfsSource::Directory {
            path: rootfs.to_owned(),
        },
        terminal: false,
        console_size: None,
        stdin: false,
    })?;
    client.start(id)?;
    let status = client.wait(id, None)?;
    client.remove_container(id, false)?;
    let elapsed = started.elapsed();
    ensure!(status.exit_code == 0, "/bin/true exited with {status:?}");
    Ok(elapsed)
}

fn crun_run(crun: &Path, state: &Path, bundle: &Path, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(crun)
        .arg("--root")
        .arg(state)
        .arg("--cgroup-manager=disabled")
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", crun.display()))?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "crun run exited with {status}");
    Ok(elapsed)
}

/// A private mount namespace without the cgroup2 mount (see the module documentation). Must
/// run before any thread exists: unshare(CLONE_NEWNS) refuses multi-threaded callers.
fn hide_unified_cgroup() -> anyhow::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unsharing the mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;
    match umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).context("unmounting /sys/fs/cgroup/unified"),
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("agent_bench: not run (run it with `cargo bench`, as root)");
        return Ok(());
    }
    let args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    if !nix::unistd::geteuid().is_root() {
        bail!("agent_bench needs root (both runtimes create namespaces and mounts)");
    }
    hide_unified_cgroup()?;
    let agent_binary = match &args.agent {
        Some(path) => path.clone(),
        None => PathBuf::from(env!("CARGO_BIN_EXE_rust-vm-agent")),
    };
    let dir = tempfile::Builder::new().prefix("agent-bench-").tempdir()?;
    let bundle = BusyboxBundle::with_spec("agent-bench", &bench_spec());
    let spec: Spec = serde_json::from_value(bench_spec())?;
    let rootfs = bundle.root();
    let crun_state = dir.path().join("crun-state");
    let (_agent, client) = start_agent(&agent_binary, dir.path())?;

    let mut agent_times = Vec::with_capacity(args.runs);
    let mut crun_times = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let id = format!("bench-{i}");
        let a = agent_run(&client, &spec, &rootfs, &id).context("agent run")?;
        let c = crun_run(&args.crun, &crun_state, bundle.path(), &id).context("crun run")?;
        if i >= args.warmup {
            agent_times.push(a);
            crun_times.push(c);
        }
    }
    let agent_median = median(&mut agent_times);
    let crun_median = median(&mut crun_times);
    println!(
        "create+start+wait+remove of busybox /bin/true, {} runs each (after {} warm-up), no cgroups{}",
        args.runs,
        args.warmup,
        if cfg!(debug_assertions) {
            " [DEBUG BUILD: use cargo bench]"
        } else {
            ""
        }
    );
    println!(
        "  rust-vm-agent (host mode, over its Unix socket): median {:8.3} ms  (min {:.3}, max {:.3})",
        ms(agent_median),
        ms(agent_times[0]),
        ms(agent_times[agent_times.len() - 1])
    );
    println!(
        "  crun run:                                        median {:8.3} ms  (min {:.3}, max {:.3})",
        ms(crun_median),
        ms(crun_times[0]),
        ms(crun_times[crun_times.len() - 1])
    );
    println!(
        "  ratio agent/crun: {:.3}",
        agent_median.as_secs_f64() / crun_median.as_secs_f64()
    );
    Ok(())
}
