//! What the owner of a container's sandbox does, for `run` (in the foreground process) and for
//! `create` (in the detached monitor): start the pod, create the container in it through the
//! library's one lifecycle (`rust_vm_sandbox::Pod`), record it; later wait for its exit and shut
//! the pod down.

use std::time::Duration;

use anyhow::{Context, Result};
use rust_vm_sandbox::{Backend, NewContainer, Pod, RuntimeConfig};

use crate::bundle::Bundle;
use crate::state::{self, ContainerDir, ExitRecord, Record};
use crate::stdio::Relay;

pub struct Owned {
    pub pod: Pod,
    /// The process has a terminal (its output comes on the stdout stream).
    pub terminal: bool,
    pub record: Record,
    pub relay: Relay,
}

/// Starts the pod and creates the container (not started); its prestart and createRuntime hooks
/// have run. On error nothing is left running and the sandbox directory is gone (the caller
/// removes the container directory).
pub fn create(
    runtime: &RuntimeConfig,
    dir: &ContainerDir,
    bundle: &Bundle,
    console_log: Option<std::path::PathBuf>,
) -> Result<Owned> {
    let id = &dir.id;
    state::write_atomic(&dir.runtime_path(), &serde_json::to_vec_pretty(runtime)?)?;
    let mut cfg = runtime.sandbox_config(id, &dir.sandbox_dir());
    cfg.first_container(&bundle.rootfs, &bundle.spec);
    cfg.console_log = console_log;
    let pod = Pod::start(cfg)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let new = NewContainer {
        id,
        bundle: &bundle.dir,
        spec: &bundle.spec,
        rootfs: &bundle.rootfs,
        terminal,
        console_size: if terminal {
            crate::stdio::terminal_size()
        } else {
            None
        },
        stdin: true,
        deadline: None,
    };
    let created = pod.create_container(&new, |pod| {
        Relay::attach(
            pod.agent_address(),
            id,
            None,
            terminal,
            true,
            pod.client().timeout(),
        )
        .map_err(Into::<Box<dyn std::error::Error + Send + Sync>>::into)
    });
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            if let Err(down) = pod.shutdown() {
                log::warn!("container {id}: {}", rust_vm_sandbox::Chain(&down));
            }
            return Err(e.into());
        }
    };
    let owner_pid = std::process::id();
    let record = Record {
        id: id.clone(),
        bundle: bundle.dir.clone(),
        backend: pod.backend(),
        agent_address: pod.agent_address().to_string(),
        owner_pid,
        owner_start_time: state::process_start_time(owner_pid).unwrap_or(0),
        sandbox_pid: pod.pid(),
        init_pid: created.guest_pid,
        pid: reported_pid(pod.backend(), owner_pid, created.pid),
        created: state::rfc3339_now(),
        annotations: rust_vm_sandbox::hooks::annotations(&bundle.spec),
    };
    dir.write_record(&record)?;
    Ok(Owned {
        pod,
        terminal,
        record,
        relay: created.stdio,
    })
}

/// The pid `state` and `--pid-file` give: on `namespaces` the init's host pid (`pid`, the pod's
/// rule), as runc; on `vm` the owner's (the monitor of `create`, or `run` itself). A runc-style
/// caller such as podman's conmon reaps that pid as the container's init: the owner is its child
/// (the VMM is not), exits with the container's status and takes the VMM with it.
fn reported_pid(backend: Backend, owner_pid: u32, pid: i32) -> i32 {
    match backend {
        Backend::Vm => i32::try_from(owner_pid).unwrap_or(pid),
        Backend::Namespaces => pid,
    }
}

/// Waits for the container's init to exit, records it, and shuts the pod down.
pub fn wait_and_finish(owned: Owned, dir: &ContainerDir) -> Result<ExitRecord> {
    let Owned {
        pod, record, relay, ..
    } = owned;
    let status = pod.client().wait(&record.id, None);
    let exit = match status {
        Ok(s) => ExitRecord {
            exit_code: s.exit_code,
            signal: s.signal,
        },
        Err(e) => {
            // The agent is gone (killed, or the VM died): the container died with it.
            log::warn!(
                "container {}: waiting for exit: {}",
                record.id,
                rust_vm_sandbox::Chain(&e)
            );
            ExitRecord {
                exit_code: 128 + libc::SIGKILL,
                signal: Some(libc::SIGKILL),
            }
        }
    };
    relay.drain(Duration::from_secs(5));
    dir.write_exit(&exit)?;
    log::info!("container {} exited with {}", record.id, exit.exit_code);
    pod.shutdown().context("shutting the sandbox down")?;
    Ok(exit)
}
