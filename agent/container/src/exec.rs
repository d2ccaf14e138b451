//! `exec`: run another process inside a running container. An intermediate joins the
//! container's namespaces (the pid namespace applies to its children), enters the cgroup,
//! and clones the process with CLONE_PARENT so the agent is its parent.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use oci_spec::runtime::Process;

use super::channel::{Channel, Message};
use super::create::{map_contains_zero, prepare_stdio, terminal_master, unexpected};
use super::error::ContainerError;
use super::init::{fork_intermediate, ChildArgs, ChildStdio, Role};
use super::namespaces::NamespacePlan;
use super::process::ProcessPlan;
use super::spec::validate_process;
use super::{Container, ProcessHandle, Status, StdioSpec};

impl Container {
    pub fn exec(
        &mut self,
        process: &Process,
        stdio: StdioSpec,
    ) -> Result<ProcessHandle, ContainerError> {
        if self.status != Status::Running {
            return Err(ContainerError::InvalidState {
                id: self.id.clone(),
                operation: "exec",
                state: self.status.name(),
            });
        }
        validate_process(process, "process")?;
        let plan = ProcessPlan::new(process, "process")?;
        let seccomp = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(super::seccomp::compile)
            .transpose()?;
        let namespaces = NamespacePlan::join_process(&self.id, self.init_pid, &self.namespaces)?;
        // The init may have exited and its pid been reused: these must be its namespaces.
        if !self.init_alive() {
            self.status = Status::Stopped;
            return Err(ContainerError::InvalidState {
                id: self.id.clone(),
                operation: "exec",
                state: "stopped",
            });
        }
        let mut stdio = prepare_stdio(&self.id, stdio)?;
        let linux = self.spec.linux().as_ref();
        let root_mapped = map_contains_zero(linux.and_then(|l| l.uid_mappings().as_ref()))
            && map_contains_zero(linux.and_then(|l| l.gid_mappings().as_ref()));
        let join: Vec<(RawFd, nix::sched::CloneFlags)> = namespaces
            .join
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect();
        let id = self.id.clone();
        let sys_err = |what: &'static str| {
            let id = id.clone();
            move |e: std::io::Error| ContainerError::sys(&id, what, e)
        };
        let (agent_chan, child_chan) =
            Channel::pair().map_err(sys_err("creating the exec channel"))?;
        agent_chan
            .set_timeout(self.step_timeout)
            .map_err(sys_err("setting the channel timeout"))?;
        let keep: Vec<RawFd> = namespaces
            .join_fds()
            .chain(std::iter::once(child_chan.raw()))
            .collect();
        let sys = self.sys.as_ref();
        let pid = fork_intermediate(&self.id, stdio.fds, &keep, |moved| ChildArgs {
            sys,
            role: Role::Exec,
            process: &plan,
            join: &join,
            new_user: false,
            root_mapped,
            unshare: nix::sched::CloneFlags::empty(),
            stdio: ChildStdio {
                fds: moved,
                ..stdio.child()
            },
            chan: child_chan.raw(),
            seccomp: seccomp.as_ref(),
        })?;
        drop(child_chan);
        stdio.release_child_ends();
        let result = self.finish_exec(pid, &agent_chan, stdio.terminal.is_some());
        match result {
            Ok((exec_pid, pty_master)) => {
                // Forget exec'd processes that are gone (their pids may be reused).
                let current = self.pids().unwrap_or_default();
                self.exec_pids.retain(|p| current.contains(p));
                self.exec_pids.push(exec_pid);
                Ok(ProcessHandle {
                    pid: exec_pid,
                    pty_master,
                })
            }
            Err((e, child)) => {
                for p in std::iter::once(pid).chain(child) {
                    let _ = self.sys.kill(p, libc::SIGKILL);
                }
                Err(e)
            }
        }
    }

    /// Agent side of exec: cgroup, go, pid (and pty master), then EOF (exec done) or an error.
    fn finish_exec(
        &self,
        intermediate: i32,
        chan: &Channel,
        terminal: bool,
    ) -> Result<(i32, Option<OwnedFd>), (ContainerError, Option<i32>)> {
        let id = &self.id;
        if let Some(cg) = &self.cgroup {
            cg.add_process(intermediate)
                .map_err(|e| (self.cgroup_err(e), None))?;
        }
        chan.send(&Message::Go).map_err(|e| {
            (
                ContainerError::sys(id, "starting the exec intermediate", e),
                None,
            )
        })?;
        // The intermediate's `Pid` and the process's pty master, exec (EOF) or error race.
        let mut pid = None;
        let mut pty_master = None;
        loop {
            match chan.recv_with_fd() {
                Ok(Some((Message::Pid(p), None))) if pid.is_none() => pid = Some(p),
                Ok(Some((Message::Terminal, fd))) => {
                    pty_master =
                        Some(terminal_master(id, terminal, fd, &pty_master).map_err(|e| (e, pid))?);
                }
                Ok(None) => {
                    let pid = pid.ok_or_else(|| (unexpected(id, None, "exec pid"), None))?;
                    if pty_master.is_some() != terminal {
                        return Err((unexpected(id, None, "a pty master"), Some(pid)));
                    }
                    return Ok((pid, pty_master));
                }
                Ok(other) => return Err((unexpected(id, other.map(|(m, _)| m), "exec"), pid)),
                Err(e) => return Err((ContainerError::sys(id, "waiting for exec", e), pid)),
            }
        }
    }
}
