//! What the owner of a container's sandbox does, for `run` (in the foreground process) and for
//! `create` (in the detached monitor): start the sandbox, create the container in it, attach its
//! stdio, record it; later wait for its exit and tear the sandbox down.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use rust_vm_sandbox::protocol::CreateContainer;
use rust_vm_sandbox::sandbox::process::host_pid_in_namespace;
use rust_vm_sandbox::{Backend, RuntimeConfig, Sandbox};

use crate::bundle::Bundle;
use crate::hooks::{self, Stage};
use crate::state::{self, ContainerDir, ExitRecord, Record};
use crate::stdio::Relay;

pub struct Owned {
    pub sandbox: Sandbox,
    /// The process has a terminal (its output comes on the stdout stream).
    pub terminal: bool,
    pub record: Record,
    pub relay: Relay,
}

/// Starts the sandbox and creates the container (not started). On error nothing is left
/// running and the sandbox directory is gone (the caller removes the container directory).
pub fn create(
    runtime: &RuntimeConfig,
    dir: &ContainerDir,
    bundle: &Bundle,
    console_log: Option<std::path::PathBuf>,
) -> Result<Owned> {
    let id = &dir.id;
    state::write_atomic(&dir.runtime_path(), &serde_json::to_vec_pretty(runtime)?)?;
    let mut cfg = runtime.sandbox_config(id, &dir.sandbox_dir());
    cfg.rootfs = Some(bundle.rootfs.clone());
    cfg.console_log = console_log;
    let mut sandbox = Sandbox::start(cfg).context("starting the sandbox")?;
    let rootfs = sandbox.rootfs_source(&bundle.rootfs)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let created = match sandbox.client().create_container(CreateContainer {
        container_id: id.clone(),
        spec: Box::new(spec_for_agent(&bundle.spec)),
        rootfs,
        terminal,
        console_size: if terminal {
            crate::stdio::terminal_size()
        } else {
            None
        },
        stdin: true,
    }) {
        Ok(created) => created,
        Err(e) => {
            // A closed connection usually means the VMM (or agent) died: say so, with its logs.
            let e = match sandbox.check_alive() {
                Err(dead) => anyhow::Error::new(dead).context(e.to_string()),
                Ok(()) => e.into(),
            };
            return Err(e.context(format!("creating container {id:?} in the sandbox")));
        }
    };
    let relay = Relay::attach(sandbox.agent_address(), id, None, terminal, true)?;
    let pid = match sandbox.backend() {
        // The agent's pid namespace is nested in ours: report the host pid, as runc would.
        Backend::Namespaces => host_pid_in_namespace(sandbox.pid(), created.pid as u32)
            .map(|p| p as i32)
            .unwrap_or(created.pid),
        // The container lives in the guest: the VMM is its host process (as Kata reports).
        Backend::Vm => sandbox.pid() as i32,
    };
    let owner_pid = std::process::id();
    let annotations: BTreeMap<String, String> = bundle
        .spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let record = Record {
        id: id.clone(),
        bundle: bundle.dir.clone(),
        backend: sandbox.backend(),
        agent_address: sandbox.agent_address().to_string(),
        owner_pid,
        owner_start_time: state::process_start_time(owner_pid).unwrap_or(0),
        sandbox_pid: sandbox.pid(),
        init_pid: created.pid,
        pid,
        created: state::rfc3339_now(),
        annotations,
    };
    dir.write_record(&record)?;
    let oci = dir.oci_state()?;
    for stage in [Stage::Prestart, Stage::CreateRuntime] {
        hooks::run(&bundle.spec, stage, &oci)?;
    }
    Ok(Owned {
        sandbox,
        terminal,
        record,
        relay,
    })
}

/// The spec as the agent gets it: without the hooks this command runs on the host (prestart,
/// createRuntime, poststart, poststop). createContainer and startContainer stay: they belong in
/// the container's namespaces, which only the agent can enter.
#[allow(deprecated)] // prestart is deprecated in the spec, and still honoured.
fn spec_for_agent(spec: &oci_spec::runtime::Spec) -> oci_spec::runtime::Spec {
    let mut spec = spec.clone();
    let in_container = spec.hooks().as_ref().and_then(|hooks| {
        let mut kept = oci_spec::runtime::Hooks::default();
        kept.set_create_container(hooks.create_container().clone());
        kept.set_start_container(hooks.start_container().clone());
        let any = kept
            .create_container()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
            || kept
                .start_container()
                .as_ref()
                .is_some_and(|h| !h.is_empty());
        any.then_some(kept)
    });
    spec.set_hooks(in_container);
    spec
}

/// Waits for the container's init to exit, records it, and shuts the sandbox down.
pub fn wait_and_finish(owned: Owned, dir: &ContainerDir) -> Result<ExitRecord> {
    let Owned {
        sandbox,
        record,
        relay,
        ..
    } = owned;
    let status = sandbox.client().wait(&record.id, None);
    let exit = match status {
        Ok(s) => ExitRecord {
            exit_code: s.exit_code,
            signal: s.signal,
        },
        Err(e) => {
            // The agent is gone (killed, or the VM died): the container died with it.
            log::warn!("container {}: waiting for exit: {e}", record.id);
            ExitRecord {
                exit_code: 128 + libc::SIGKILL,
                signal: Some(libc::SIGKILL),
            }
        }
    };
    relay.drain(Duration::from_secs(5));
    dir.write_exit(&exit)?;
    log::info!("container {} exited with {}", record.id, exit.exit_code);
    sandbox.shutdown().context("shutting the sandbox down")?;
    Ok(exit)
}
