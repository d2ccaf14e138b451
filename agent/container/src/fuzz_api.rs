//! Entry points for the fuzz harnesses (feature `fuzzing`, off by default): the whole spec
//! translation a `create` runs before any resource is touched, and the container process's
//! setup sequence played against the recording syscalls double, so nothing real happens.

use std::path::Path;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};

use crate::channel::{Channel, Message};
use crate::init::{init_steps, ChildArgs, ChildStdio, Role};
use crate::process::ProcessPlan;
use crate::spec::{validate, validate_process, validate_resources, Capabilities};
use crate::syscalls::recording::RecordingSyscalls;
use crate::syscalls::FileKind;
use crate::{parse_spec_json, ContainerError, SpecError};

const ROOTFS: &str = "/run/fuzz/rootfs";

/// How far a spec got through the translation.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("spec has no process")]
    NoProcess,
    #[error("cannot create the agent channel: {0}")]
    Channel(std::io::Error),
    /// The setup sequence stopped; with the recording double it always ends at the execve.
    #[error("setup stopped after {calls} calls: {message}")]
    Setup { calls: usize, message: String },
}

/// Parses, validates (with and without cgroups on offer) and translates `json` as `create`
/// would for container `id`, then runs the init sequence against recorded syscalls.
pub fn translate_spec(id: &str, json: &[u8], cgroups: bool) -> Result<(), TranslateError> {
    let spec = parse_spec_json(json)?;
    translate(id, &spec, cgroups)
}

/// [`translate_spec`] for a spec that is already parsed (as a `create_container` request
/// carries it).
pub fn translate(id: &str, spec: &Spec, cgroups: bool) -> Result<(), TranslateError> {
    crate::create::validate_id(id)?;
    validate(spec, Capabilities { cgroups })?;
    let process = spec.process().as_ref().ok_or(TranslateError::NoProcess)?;
    let plan = ProcessPlan::new(process, "process")?;
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(crate::seccomp::compile(profile)?),
        None => None,
    };
    let (agent, child) = Channel::pair().map_err(TranslateError::Channel)?;
    // The child waits for `Start` before its execve; queue it so the sequence runs through.
    agent
        .send(&Message::Start)
        .map_err(TranslateError::Channel)?;
    let new_user = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let sys = RecordingSyscalls::new();
    // What the seeds' process and bind mounts name, so the sequence gets past them.
    sys.add_file("/bin/sh", FileKind::File);
    sys.add_file("/srv", FileKind::Directory);
    let rootfs = Path::new(ROOTFS);
    let args = ChildArgs {
        sys: &sys,
        role: Role::Init {
            spec,
            rootfs,
            cgroup: None,
        },
        process: &plan,
        join: &[],
        new_user,
        root_mapped: new_user,
        unshare: CloneFlags::empty(),
        stdio: ChildStdio {
            fds: [10, 11, 12],
            terminal: None,
        },
        chan: child.raw(),
        seccomp: seccomp.as_ref(),
    };
    let message = match init_steps(&args, spec, rootfs, None) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    Err(TranslateError::Setup {
        calls: sys.calls().len(),
        message,
    })
}

/// What `exec` checks of a process before it forks.
pub fn check_exec(process: &Process) -> Result<(), TranslateError> {
    validate_process(process, "process")?;
    ProcessPlan::new(process, "process")?;
    Ok(())
}

/// What `update_resources` checks before it writes the cgroup.
pub fn check_resources(resources: &LinuxResources) -> Result<(), TranslateError> {
    validate_resources(resources, Capabilities { cgroups: true })?;
    Ok(())
}
