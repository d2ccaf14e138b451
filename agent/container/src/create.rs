//! `create`: validate, set up cgroup and rootfs source, fork the intermediate, and wait until
//! the container init reports `Ready` (blocked before exec). Any failure undoes every step.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxIdMapping, Spec};

use super::cgroup::{ApplyError, Cgroup};
use super::channel::{Channel, Message};
use super::config::{CgroupConfig, RuntimeConfig};
use super::destroy::{unmount_with_retry, wait_exited};
use super::error::{ContainerError, SpecError};
use super::init::{fork_intermediate, ChildArgs, ChildStdio, Role, TerminalSize};
use super::namespaces::NamespacePlan;
use super::process::ProcessPlan;
use super::spec::{validate, Capabilities};
use super::syscalls::Syscalls;
use super::{Container, CreateRequest, ProcessHandle, RootfsSource, Status, StdioSpec};

pub(crate) fn validate_id(id: &str) -> Result<(), ContainerError> {
    let bad = |reason| {
        Err(ContainerError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 128 {
        return bad("longer than 128 bytes");
    }
    if id == "." || id == ".." {
        return bad("not a name");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// Stdio ends for the child until the fork.
pub(crate) struct PreparedStdio {
    /// Owned here until the fork; the child gets copies.
    owned: Vec<OwnedFd>,
    pub fds: [RawFd; 3],
    /// The container process opens its pty itself, in the container's devpts.
    pub terminal: Option<TerminalSize>,
}

fn dev_null(id: &str) -> Result<OwnedFd, ContainerError> {
    fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| ContainerError::sys(id, "opening /dev/null", e))
}

pub(crate) fn prepare_stdio(id: &str, stdio: StdioSpec) -> Result<PreparedStdio, ContainerError> {
    match stdio {
        StdioSpec::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            let stdin = match stdin {
                Some(fd) => fd,
                None => dev_null(id)?,
            };
            let fds = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
            Ok(PreparedStdio {
                owned: vec![stdin, stdout, stderr],
                fds,
                terminal: None,
            })
        }
        StdioSpec::Terminal { rows, cols } => {
            // Stdio during setup, until the pty replaces it.
            let null = dev_null(id)?;
            Ok(PreparedStdio {
                fds: [null.as_raw_fd(); 3],
                owned: vec![null],
                terminal: Some(TerminalSize { rows, cols }),
            })
        }
    }
}

impl PreparedStdio {
    pub fn child(&self) -> ChildStdio {
        ChildStdio {
            fds: self.fds,
            terminal: self.terminal,
        }
    }

    /// The child holds its copies now.
    pub fn release_child_ends(&mut self) {
        self.owned.clear();
    }
}

/// A `Terminal` message with the pty master, where one is expected.
pub(crate) fn terminal_master(
    id: &str,
    expected: bool,
    master: Option<OwnedFd>,
    have: &Option<OwnedFd>,
) -> Result<OwnedFd, ContainerError> {
    match master {
        Some(m) if expected && have.is_none() => Ok(m),
        _ => Err(unexpected(id, Some(Message::Terminal), "a pty master")),
    }
}

pub(crate) fn map_contains_zero(maps: Option<&Vec<LinuxIdMapping>>) -> bool {
    maps.into_iter()
        .flatten()
        .any(|m| m.container_id() == 0 && m.size() > 0)
}

fn id_map_text(maps: Option<&Vec<LinuxIdMapping>>) -> String {
    maps.into_iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Resources taken so far; `rollback` gives them back in reverse order.
struct Partial<'a> {
    id: &'a str,
    sys: &'a dyn Syscalls,
    state_dir: Option<PathBuf>,
    block_mount: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pids: Vec<i32>,
}

impl Partial<'_> {
    fn rollback(self) {
        for &pid in &self.pids {
            let _ = self.sys.kill(pid, libc::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            let sys = self.sys;
            let _ = cg.kill_all(&|pid| sys.kill(pid, libc::SIGKILL));
        }
        wait_exited(&self.pids, Duration::from_secs(5));
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.remove(Duration::from_secs(5)) {
                log::error!(
                    "container {}: rollback: cgroup {}: {}",
                    self.id,
                    e.path.display(),
                    e.source
                );
            }
        }
        if let Some(m) = &self.block_mount {
            if let Err(e) = unmount_with_retry(self.sys, m) {
                log::error!(
                    "container {}: rollback: unmounting {}: {e}",
                    self.id,
                    m.display()
                );
            }
        }
        if let Some(d) = &self.state_dir {
            if let Err(e) = fs::remove_dir_all(d) {
                log::error!(
                    "container {}: rollback: removing {}: {e}",
                    self.id,
                    d.display()
                );
            }
        }
    }
}

fn cgroup_error(id: &str, e: super::cgroup::CgroupIoError) -> ContainerError {
    ContainerError::Cgroup {
        id: id.to_string(),
        path: e.path,
        what: e.what,
        source: e.source,
    }
}

impl Container {
    /// Creates with [`RuntimeConfig::default`] (cgroups detected, state under /run/rust-vm).
    pub fn create(
        req: CreateRequest,
        sys: Arc<dyn Syscalls>,
    ) -> Result<(Container, ProcessHandle), ContainerError> {
        Self::create_with_config(req, sys, RuntimeConfig::default())
    }

    pub fn create_with_config(
        req: CreateRequest,
        sys: Arc<dyn Syscalls>,
        config: RuntimeConfig,
    ) -> Result<(Container, ProcessHandle), ContainerError> {
        let CreateRequest {
            id,
            spec,
            rootfs,
            stdio,
        } = req;
        validate_id(&id)?;
        let cgroups_on = matches!(config.cgroups, CgroupConfig::V2 { .. });
        validate(
            &spec,
            Capabilities {
                cgroups: cgroups_on,
            },
        )?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| SpecError::new("process", "missing"))?;
        let wants_terminal = process.terminal().unwrap_or(false);
        let gives_terminal = matches!(stdio, StdioSpec::Terminal { .. });
        if wants_terminal != gives_terminal {
            return Err(SpecError::new(
                "process.terminal",
                format!(
                    "is {wants_terminal} but the request's stdio is {}",
                    if gives_terminal {
                        "a terminal"
                    } else {
                        "pipes"
                    }
                ),
            )
            .into());
        }
        let plan = ProcessPlan::new(process, "process")?;
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(super::seccomp::compile)
            .transpose()?;
        let asks_devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_ref())
            .is_some_and(|d| !d.is_empty());
        if asks_devices && !cgroups_on {
            log::warn!(
                "container {id}: linux.resources.devices is not enforced (cgroups are disabled)"
            );
        }
        if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
            log::warn!(
                "container {id}: process.apparmorProfile/selinuxLabel are not applied: \
                 the guest kernel has no LSM"
            );
        }
        let namespaces = NamespacePlan::from_spec(&id, &spec)?;
        let mut stdio = prepare_stdio(&id, stdio)?;

        let mut partial = Partial {
            id: &id,
            sys: sys.as_ref(),
            state_dir: None,
            block_mount: None,
            cgroup: None,
            pids: Vec::new(),
        };
        let started = setup(
            &id,
            &spec,
            rootfs,
            &config,
            &plan,
            &namespaces,
            seccomp.as_ref(),
            &mut stdio,
            &mut partial,
        );
        match started {
            Ok((init_pid, chan, init_pidfd, pty_master)) => {
                let container = Container {
                    init_pidfd,
                    id: id.clone(),
                    sys: sys.clone(),
                    status: Status::Created,
                    init_pid,
                    start_chan: Some(chan),
                    cgroup: partial.cgroup.take(),
                    block_mount: partial.block_mount.take(),
                    state_dir: partial.state_dir.take(),
                    namespaces: namespaces.types.clone(),
                    exec_pids: Vec::new(),
                    step_timeout: config.step_timeout,
                    torn_down: false,
                    spec,
                };
                Ok((
                    container,
                    ProcessHandle {
                        pid: init_pid,
                        pty_master,
                    },
                ))
            }
            Err(e) => {
                partial.rollback();
                Err(e)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn setup(
    id: &str,
    spec: &Spec,
    rootfs: RootfsSource,
    config: &RuntimeConfig,
    plan: &ProcessPlan,
    namespaces: &NamespacePlan,
    seccomp: Option<&libseccomp::ScmpFilterContext>,
    stdio: &mut PreparedStdio,
    partial: &mut Partial,
) -> Result<(i32, Channel, OwnedFd, Option<OwnedFd>), ContainerError> {
    let sys = partial.sys;
    let rootfs_dir = match rootfs {
        RootfsSource::Directory(dir) => {
            if !dir.is_absolute() {
                return Err(SpecError::new(
                    "rootfs",
                    format!("{} is not an absolute path", dir.display()),
                )
                .into());
            }
            if !dir.is_dir() {
                return Err(ContainerError::sys(
                    id,
                    format!("rootfs {}", dir.display()),
                    std::io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
            dir
        }
        RootfsSource::BlockDevice {
            device,
            fstype,
            readonly,
        } => {
            let state = config.state_dir.join(id);
            fs::create_dir_all(config.state_dir.as_path()).map_err(|e| {
                ContainerError::sys(id, format!("creating {}", config.state_dir.display()), e)
            })?;
            fs::create_dir(&state)
                .map_err(|e| ContainerError::sys(id, format!("creating {}", state.display()), e))?;
            partial.state_dir = Some(state.clone());
            let target = state.join("rootfs");
            fs::create_dir(&target).map_err(|e| {
                ContainerError::sys(id, format!("creating {}", target.display()), e)
            })?;
            // The host may have written a new filesystem onto this disk (a pod's disk slot)
            // after the guest cached its first blocks at probe time or for a previous container.
            sys.flush_block_device(&device).map_err(|e| {
                ContainerError::sys(
                    id,
                    format!("dropping cached blocks of {}", device.display()),
                    e,
                )
            })?;
            let flags = if readonly {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            };
            sys.mount(Some(&device), &target, Some(&fstype), flags, None)
                .map_err(|e| {
                    ContainerError::sys(
                        id,
                        format!(
                            "mounting {} ({fstype}) on {}",
                            device.display(),
                            target.display()
                        ),
                        e,
                    )
                })?;
            partial.block_mount = Some(target.clone());
            target
        }
    };

    if let CgroupConfig::V2 { root } = &config.cgroups {
        let name = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.strip_prefix("/").map(Path::to_path_buf).unwrap_or(p))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(id));
        let cg = Cgroup::create(root, &name).map_err(|e| cgroup_error(id, e))?;
        let applied = match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            Some(r) => cg.apply(r),
            None => Ok(()),
        };
        partial.cgroup = Some(cg);
        match applied {
            Ok(()) => {}
            Err(ApplyError::Spec(e)) => return Err(e.into()),
            Err(ApplyError::Io(e)) => return Err(cgroup_error(id, e)),
        }
    }

    let linux = spec.linux().as_ref();
    let uid_maps = linux.and_then(|l| l.uid_mappings().as_ref());
    let gid_maps = linux.and_then(|l| l.gid_mappings().as_ref());
    let root_mapped = map_contains_zero(uid_maps) && map_contains_zero(gid_maps);
    let join: Vec<(RawFd, nix::sched::CloneFlags)> = namespaces
        .join
        .iter()
        .map(|(fd, t)| (fd.as_raw_fd(), *t))
        .collect();

    let (agent_chan, child_chan) =
        Channel::pair().map_err(|e| ContainerError::sys(id, "creating the setup channel", e))?;
    agent_chan
        .set_timeout(config.step_timeout)
        .map_err(|e| ContainerError::sys(id, "setting the channel timeout", e))?;

    let keep: Vec<RawFd> = namespaces
        .join_fds()
        .chain(std::iter::once(child_chan.raw()))
        .collect();
    let rootfs_path = rootfs_dir.as_path();
    let pid = fork_intermediate(id, stdio.fds, &keep, |moved| ChildArgs {
        sys,
        role: Role::Init {
            spec,
            rootfs: rootfs_path,
            cgroup: partial.cgroup.as_ref().map(|cg| cg.path()),
        },
        process: plan,
        join: &join,
        new_user: namespaces.new_user,
        root_mapped,
        unshare: namespaces.unshare,
        stdio: ChildStdio {
            fds: moved,
            ..stdio.child()
        },
        chan: child_chan.raw(),
        seccomp,
    })?;
    partial.pids.push(pid);
    drop(child_chan);
    stdio.release_child_ends();

    if let Some(cg) = &partial.cgroup {
        cg.add_process(pid).map_err(|e| cgroup_error(id, e))?;
    }
    let step = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| ContainerError::sys(id, what, e)
    };
    agent_chan
        .send(&Message::Go)
        .map_err(step("starting the intermediate"))?;
    let recv = |what: &str| agent_chan.recv_with_fd().map_err(step(what));
    let mut next = recv("waiting for the intermediate")?;
    if namespaces.new_user {
        if !matches!(next, Some((Message::NeedIdMaps, None))) {
            return Err(unexpected(id, next.map(|(m, _)| m), "id map request"));
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        sys.write_file(&proc_dir.join("uid_map"), id_map_text(uid_maps).as_bytes())
            .map_err(step("linux.uidMappings: writing uid_map"))?;
        sys.write_file(&proc_dir.join("gid_map"), id_map_text(gid_maps).as_bytes())
            .map_err(step("linux.gidMappings: writing gid_map"))?;
        agent_chan
            .send(&Message::IdMapsDone)
            .map_err(step("confirming id maps"))?;
        next = recv("waiting for the init pid")?;
    }
    // The intermediate's `Pid` races with the init's `Terminal` (first, with a terminal)
    // and `Ready` on the same channel.
    let terminal = stdio.terminal.is_some();
    let mut init_pid = None;
    let mut pty_master = None;
    let mut ready = false;
    loop {
        match next {
            Some((Message::Pid(p), None)) if init_pid.is_none() => {
                init_pid = Some(p);
                partial.pids.push(p);
            }
            Some((Message::Terminal, fd)) => {
                pty_master = Some(terminal_master(id, terminal, fd, &pty_master)?);
            }
            Some((Message::Ready, None)) if !ready && pty_master.is_some() == terminal => {
                ready = true
            }
            other => {
                return Err(unexpected(
                    id,
                    other.map(|(m, _)| m),
                    "the init pid and ready",
                ))
            }
        }
        if let (Some(pid), true) = (init_pid, ready) {
            // The init is blocked before exec, so this pid is still the init's.
            let pidfd = sys
                .pidfd_open(pid)
                .map_err(step("pidfd_open of the init"))?;
            return Ok((pid, agent_chan, pidfd, pty_master));
        }
        next = recv("waiting for the init to be ready")?;
    }
}

pub(crate) fn unexpected(id: &str, got: Option<Message>, waiting_for: &str) -> ContainerError {
    let message = match got {
        Some(Message::Error(m)) => m,
        Some(other) => format!("protocol error: got {other:?} while waiting for {waiting_for}"),
        None => format!("the process exited while the agent waited for {waiting_for}"),
    };
    ContainerError::InitFailed {
        id: id.to_string(),
        message,
    }
}
