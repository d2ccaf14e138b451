//! `create`: a detached container. A monitor process (`rust-vm __monitor`, re-executed from this
//! binary, like conmon for runc) owns the sandbox and relays the container's stdio to the stdio
//! `create` was given; `create` returns once the container exists. The monitor outlives the
//! command, and the VMM or agent dies with the monitor (parent-death signal).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bundle::Bundle;
use crate::state::{self, ContainerDir};
use crate::Global;

/// The descriptor on which the monitor reports `ok <pid>` or `error: <message>`.
pub const READY_FD: i32 = 3;

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bundle directory (with config.json and the rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Container id.
    pub id: String,
}

pub fn create(g: &Global, args: CreateArgs) -> Result<()> {
    let runtime = g.runtime_config()?;
    let bundle = Bundle::load(&args.bundle)?;
    let dir = g.root().create(&args.id)?;
    let result = (|| {
        dir.write_owner()?;
        state::write_atomic(&dir.runtime_path(), &serde_json::to_vec_pretty(&runtime)?)?;
        let pid = spawn_monitor(g, &dir, &bundle)?;
        if let Some(path) = &args.pid_file {
            write_pid_file(path, pid)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir.path);
    }
    result
}

pub fn write_pid_file(path: &std::path::Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("rust-vm-tmp");
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("writing pid file {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing pid file {}", path.display()))
}

fn spawn_monitor(g: &Global, dir: &ContainerDir, bundle: &Bundle) -> Result<i32> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("creating the monitor's ready pipe")?;
    let exe = std::env::current_exe().context("finding the rust-vm executable")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--root").arg(&g.root);
    if let Some(log) = &g.log {
        cmd.arg("--log").arg(log);
    }
    cmd.arg("--log-format")
        .arg(match g.log_format {
            crate::logger::LogFormat::Text => "text",
            crate::logger::LogFormat::Json => "json",
        })
        .arg("--log-level")
        .arg(
            g.runtime_config()
                .map(|c| c.log_level.name())
                .unwrap_or("warn"),
        )
        .arg("__monitor")
        .arg("--bundle")
        .arg(&bundle.dir)
        .arg(&dir.id);
    let write_fd = write_end.as_raw_fd();
    // SAFETY: dup2 and setsid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on the copy: the monitor inherits exactly this end.
            if libc::dup2(write_fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own session: the terminal's hangup or Ctrl-C does not reach the monitor.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the container monitor {}", exe.display()))?;
    drop(write_end);
    // One line: the monitor keeps running after it (and so may its children).
    let mut reply = String::new();
    BufReader::new(File::from(read_end))
        .read_line(&mut reply)
        .context("reading the monitor's report")?;
    if let Some(pid) = reply.strip_prefix("ok ") {
        return pid
            .trim()
            .parse()
            .with_context(|| format!("monitor reported a bad pid {pid:?}"));
    }
    let status = child.wait().ok();
    if let Some(message) = reply.strip_prefix("error: ") {
        bail!("{}", message.trim_end());
    }
    let tail = rust_vm_sandbox::LogTail::read(&dir.owner_log(), 20);
    bail!(
        "the container monitor exited ({}) before creating the container\n{tail}",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown status".into())
    )
}
