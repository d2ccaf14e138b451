//! `namespaces` back-end (tests and debugging only: no VM between the container and the host).
//!
//! The agent binary runs on the host in host mode (`--listen unix:PATH --no-cgroups`: the host has
//! cgroup v1, the agent manages cgroup v2 only) in fresh mount, PID, IPC and UTS namespaces, as
//! PID 2 under a minimal init (as PID 1 it would take itself for a guest's init). Its death ends
//! every container it started (the init exits with it and the kernel kills the PID namespace),
//! and its mounts disappear with its mount namespace.

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{process, require_file, Paths, SandboxConfig, SandboxError};

pub(super) fn check_inputs(config: &SandboxConfig) -> Result<(), SandboxError> {
    require_file(
        "agent binary",
        &config.agent_path,
        "build it with `cargo build -p rust-vm-agent` or set `agent` in /etc/rust-vm/config.toml",
    )
}

pub(super) fn agent_command(config: &SandboxConfig, paths: &Paths) -> Command {
    let mut cmd = Command::new(&config.agent_path);
    cmd.arg("--listen")
        .arg(format!("unix:{}", paths.socket.display()))
        .arg("--no-cgroups")
        .arg("--state-dir")
        .arg(paths.dir.join("agent-state"))
        .arg("--log-level")
        .arg(config.log_level.name())
        .arg("--step-timeout-secs")
        .arg(config.agent_step_timeout_secs().to_string());
    cmd
}

pub(super) fn launch(
    config: &SandboxConfig,
    paths: &Paths,
    cgroup_procs: Vec<CString>,
) -> Result<(Child, u32), SandboxError> {
    let (out, err) = process::log_stdio(&paths.console).map_err(|source| SandboxError::Io {
        what: "creating the agent log",
        path: paths.console.clone(),
        source,
    })?;
    let mut cmd = agent_command(config, paths);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    process::join_cgroup(&mut cmd, cgroup_procs);
    let mut child = process::spawn_in_namespaces(cmd).map_err(|source| SandboxError::Spawn {
        program: config.agent_path.clone(),
        source,
    })?;
    // The child is the waiter outside the namespace; the agent is its only grandchild.
    let waiter = child.id();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let agent = process::children_of(waiter)
            .first()
            .and_then(|init| process::children_of(*init).first().copied());
        if let Some(agent) = agent {
            return Ok((child, agent));
        }
        if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
            // Exited already: report the waiter; wait_for_agent reports the exit with the log.
            return Ok((child, waiter));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
