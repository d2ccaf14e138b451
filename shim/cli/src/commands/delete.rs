use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bundle::Bundle;
use crate::state::{agent_client, owner_alive, Status};
use crate::Global;
use rust_vm_sandbox::hooks::{self, Stage};
use rust_vm_sandbox::host_cgroup;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it is still running.
    #[arg(short, long)]
    pub force: bool,
    /// Container id.
    pub id: String,
}

pub fn delete(g: &Global, args: DeleteArgs) -> Result<()> {
    let root = g.root();
    let id = &args.id;
    let dir = match root.open(id) {
        Ok(dir) => dir,
        // runc: `delete --force` of an unknown container is not an error.
        Err(_) if args.force && !root.container(id).path.exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    let (status, record) = dir.status()?;
    if status == Status::Running && !args.force {
        bail!("container {id:?} is running: stop it first or use `delete --force`");
    }
    if status == Status::Creating && !args.force {
        bail!("container {id:?} is still being created: retry, or use `delete --force`");
    }
    let oci = dir.oci_state().ok();
    if let Some(record) = &record {
        if owner_alive(record.owner_pid, record.owner_start_time) {
            if let Ok(client) = agent_client(&record.agent_address, Duration::from_secs(5)) {
                if let Err(e) = client.remove_container(id, true) {
                    log::debug!(
                        "container {id}: remove in the agent: {}",
                        rust_vm_sandbox::Chain(&e)
                    );
                }
            }
            // The owner's sandbox processes die with it (parent-death signal).
            stop_owner(record.owner_pid, record.owner_start_time)?;
        }
        wait_gone(record.sandbox_pid, Duration::from_secs(5));
    } else if let Some((pid, start)) = dir.owner() {
        stop_owner(pid, start)?;
    }
    // The sandbox's host cgroup, which a killed owner could not remove (its processes are gone).
    let cgroup = host_cgroup::name(id, &dir.sandbox_dir());
    if let Err(e) = host_cgroup::clean_up(Path::new(host_cgroup::CGROUP_ROOT), &cgroup) {
        log::warn!("container {id}: {}", rust_vm_sandbox::Chain(&e));
    }
    std::fs::remove_dir_all(&dir.path)
        .with_context(|| format!("removing {}", dir.path.display()))?;
    if let (Some(record), Some(oci)) = (record, oci) {
        if let Ok(bundle) = Bundle::load(&record.bundle) {
            let mut oci = oci;
            oci.status = "stopped".into();
            if let Err(e) = hooks::run(&bundle.spec, Stage::Poststop, &oci) {
                log::warn!("container {id}: {}", rust_vm_sandbox::Chain(&e));
            }
        }
    }
    Ok(())
}

fn stop_owner(pid: u32, start_time: u64) -> Result<()> {
    if !owner_alive(pid, start_time) {
        return Ok(());
    }
    // SAFETY: plain kill(2) on a pid we just checked is the owner (same start time).
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner_alive(pid, start_time) {
        if Instant::now() >= deadline {
            bail!("owner process {pid} did not exit after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn wait_gone(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rfind(')').is_some_and(|i| s[i + 2..].starts_with('Z')))
            .unwrap_or(true);
        if zombie {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
