//! The code that runs in the forked processes, on the child side of fork:
//!
//! 1. the intermediate (a plain fork of the agent) joins or unshares namespaces, waits for
//!    its id maps, then clones the real process with CLONE_PARENT, so that process is a
//!    direct child of the agent (and pid 1 of a new pid namespace), reports its pid and exits;
//! 2. the container init builds the rootfs, applies the process spec, reports `Ready`, and
//!    blocks until `Start`, then execs; an exec'd process does the same without the rootfs
//!    and without waiting.
//!
//! Failures travel to the agent as `Message::Error` with the step that failed. These
//! functions never return into the agent's code: they `_exit`.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use libseccomp::ScmpFilterContext;
use nix::sched::CloneFlags;
use oci_spec::runtime::Spec;

use super::channel::{recv_raw, send_raw, send_raw_with_fd, Message};
use super::error::ContainerError;
use super::process::ProcessPlan;
use super::rootfs::RootfsSetup;
use super::step::{Context, StepError};
use super::syscalls::Syscalls;

/// Stdio as the container process will get it; fds already moved above 2.
#[derive(Debug, Clone, Copy)]
pub struct ChildStdio {
    pub fds: [RawFd; 3],
    /// A terminal of this size: the process opens a pty in the container's own devpts once
    /// it sees the container's /dev (`fds` are /dev/null until then) and passes its master to
    /// the agent.
    pub terminal: Option<TerminalSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

/// Which process the intermediate clones.
pub enum Role<'a> {
    Init {
        spec: &'a Spec,
        rootfs: &'a Path,
        /// The container's cgroup directory as the agent sees it, when it has one.
        cgroup: Option<&'a Path>,
    },
    Exec,
}

pub struct ChildArgs<'a> {
    pub sys: &'a dyn Syscalls,
    pub role: Role<'a>,
    pub process: &'a ProcessPlan,
    pub join: &'a [(RawFd, CloneFlags)],
    pub new_user: bool,
    /// Container uid/gid 0 are mapped: become them after unsharing the user namespace.
    pub root_mapped: bool,
    pub unshare: CloneFlags,
    pub stdio: ChildStdio,
    pub chan: RawFd,
    pub seccomp: Option<&'a ScmpFilterContext>,
}

/// Entry point of the intermediate right after fork. Never returns.
pub fn intermediate_main(args: &ChildArgs) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| intermediate(args))) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            let _ = send_raw(args.chan, &Message::Error(e.to_string()));
            1
        }
        Err(_) => {
            let _ = send_raw(
                args.chan,
                &Message::Error("intermediate process panicked".into()),
            );
            2
        }
    };
    // SAFETY: _exit never returns and skips the agent's atexit handlers, which belong to the
    // agent, not to this fork.
    unsafe { libc::_exit(code) }
}

fn expect(chan: RawFd, want: Message) -> Result<(), StepError> {
    match recv_raw(chan).ctx(|| format!("waiting for {want:?}"))? {
        Some(m) if m == want => Ok(()),
        Some(other) => Err(StepError::new(
            format!("waiting for {want:?}"),
            io::Error::other(format!("got {other:?}")),
        )),
        // The agent gave up on us.
        None => {
            // SAFETY: see intermediate_main.
            unsafe { libc::_exit(1) }
        }
    }
}

fn intermediate(args: &ChildArgs) -> Result<(), StepError> {
    let sys = args.sys;
    sys.reset_signals()
        .ctx(|| "resetting signal dispositions".to_string())?;
    expect(args.chan, Message::Go)?;
    for &(fd, t) in args.join {
        sys.setns(fd, t).ctx(|| format!("setns({t:?})"))?;
    }
    let joined_user = args
        .join
        .iter()
        .any(|(_, t)| t.contains(CloneFlags::CLONE_NEWUSER));
    if args.new_user {
        sys.unshare(CloneFlags::CLONE_NEWUSER)
            .ctx(|| "unshare(CLONE_NEWUSER)".to_string())?;
        send_raw(args.chan, &Message::NeedIdMaps).ctx(|| "asking for id maps".to_string())?;
        expect(args.chan, Message::IdMapsDone)?;
    }
    // In a user namespace, be its root (as the container's init is) rather than an unmapped
    // id: what the process creates before its final identity (its pty) is then owned by a
    // mapped id that it may give away.
    if (args.new_user || joined_user) && args.root_mapped {
        sys.setresgid(0)
            .ctx(|| "setresgid(0) in the user namespace".to_string())?;
        sys.setresuid(0)
            .ctx(|| "setresuid(0) in the user namespace".to_string())?;
    }
    if !args.unshare.is_empty() {
        sys.unshare(args.unshare)
            .ctx(|| format!("unshare({:?})", args.unshare))?;
    }
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack); this process is single-threaded.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => Err(StepError::new(
            "clone(CLONE_PARENT)",
            io::Error::last_os_error(),
        )),
        0 => child_main(args),
        pid => send_raw(args.chan, &Message::Pid(pid as i32)).ctx(|| "reporting the pid".into()),
    }
}

fn child_main(args: &ChildArgs) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match args.role {
        Role::Init {
            spec,
            rootfs,
            cgroup,
        } => init_steps(args, spec, rootfs, cgroup),
        Role::Exec => exec_steps(args),
    }));
    let message = match result {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "container process panicked during setup".to_string(),
    };
    let _ = send_raw(args.chan, &Message::Error(message));
    // SAFETY: see intermediate_main.
    unsafe { libc::_exit(127) }
}

pub fn setup_stdio(sys: &dyn Syscalls, stdio: &ChildStdio) -> Result<(), StepError> {
    sys.setsid().ctx(|| "setsid".to_string())?;
    for (target, &fd) in stdio.fds.iter().enumerate() {
        sys.dup2(fd, target as RawFd)
            .ctx(|| format!("dup2 of stdio {target}"))?;
    }
    Ok(())
}

/// For a terminal process, in the container's mount namespace and root: a pty from the
/// container's /dev/ptmx becomes the controlling terminal and stdio (so it has a name there,
/// /dev/pts/N), and its master goes to the agent over the channel. Both ends are closed here
/// afterwards: the agent holds the only master.
pub fn attach_terminal(args: &ChildArgs) -> Result<(), StepError> {
    let Some(size) = args.stdio.terminal else {
        return Ok(());
    };
    let sys = args.sys;
    let (master, slave) = sys
        .open_pty(size.rows, size.cols)
        .ctx(|| "process.terminal: a pty in the container".to_string())?;
    // As runc does: the pty is the process's user's, so it can reopen it by name.
    let (uid, gid) = (args.process.uid, args.process.gid);
    sys.fchown(slave.as_raw_fd(), uid, gid)
        .ctx(|| format!("process.terminal: giving the pty to {uid}:{gid}"))?;
    sys.set_controlling_terminal(slave.as_raw_fd())
        .ctx(|| "making the pty the controlling terminal".to_string())?;
    for target in 0..3 {
        sys.dup2(slave.as_raw_fd(), target)
            .ctx(|| format!("dup2 of the pty onto stdio {target}"))?;
    }
    send_raw_with_fd(args.chan, &Message::Terminal, Some(master.as_raw_fd()))
        .ctx(|| "passing the pty master to the agent".to_string())
}

/// Everything the container init does, in order, up to exec. Returns only on failure.
pub fn init_steps(
    args: &ChildArgs,
    spec: &Spec,
    rootfs: &Path,
    cgroup: Option<&Path>,
) -> Result<Infallible, StepError> {
    let sys = args.sys;
    setup_stdio(sys, &args.stdio)?;
    // Device nodes and mount points get exactly the modes asked for.
    sys.umask(0);
    let joins = |ns: CloneFlags| args.join.iter().any(|(_, t)| t.contains(ns));
    let in_user_ns = args.new_user || joins(CloneFlags::CLONE_NEWUSER);
    let cgroup_ns =
        args.unshare.contains(CloneFlags::CLONE_NEWCGROUP) || joins(CloneFlags::CLONE_NEWCGROUP);
    let setup = RootfsSetup {
        sys,
        spec,
        rootfs,
        in_user_ns,
        own_cgroup: cgroup.filter(|_| !cgroup_ns),
    };
    setup.prepare()?;
    setup.pivot()?;
    setup.finalize()?;
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sys.sethostname(h).ctx(|| "hostname".to_string())?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys.setdomainname(d).ctx(|| "domainname".to_string())?;
    }
    attach_terminal(args)?;
    let exe = finish_process(args)?;
    send_raw(args.chan, &Message::Ready).ctx(|| "reporting ready".to_string())?;
    expect(args.chan, Message::Start)?;
    exec(args, &exe)
}

pub fn exec_steps(args: &ChildArgs) -> Result<Infallible, StepError> {
    setup_stdio(args.sys, &args.stdio)?;
    attach_terminal(args)?;
    let exe = finish_process(args)?;
    exec(args, &exe)
}

/// Limits, seccomp (early unless no_new_privs makes a late load possible), user and
/// capabilities, then finds the program.
fn finish_process(args: &ChildArgs) -> Result<std::ffi::CString, StepError> {
    let sys = args.sys;
    let p = args.process;
    // Before any seccomp filter: a profile need not allow close_range (runtime-tools' default
    // profile does not). Nothing opened after this point is meant for the process.
    sys.cloexec_from(3)
        .ctx(|| "marking fds close-on-exec".to_string())?;
    p.apply_privileged(sys)?;
    if let Some(filter) = args.seccomp.filter(|_| !p.no_new_privileges) {
        sys.load_seccomp(filter)
            .ctx(|| "linux.seccomp".to_string())?;
    }
    p.apply_identity(sys)?;
    p.executable(sys)
}

fn exec(args: &ChildArgs, exe: &std::ffi::CStr) -> Result<Infallible, StepError> {
    let sys = args.sys;
    let p = args.process;
    if let Some(filter) = args.seccomp.filter(|_| p.no_new_privileges) {
        sys.load_seccomp(filter)
            .ctx(|| "linux.seccomp".to_string())?;
    }
    let e = sys.execve(exe, &p.args, &p.env);
    Err(StepError::new(format!("exec {}", exe.to_string_lossy()), e))
}

/// Forks the intermediate process of a create or an exec. The child moves `stdio` into place
/// (closing every other fd but `keep`), then runs [`intermediate_main`] with the arguments
/// `args` builds from the moved fds; it never returns. The parent gets the child's pid.
pub fn fork_intermediate<'a>(
    id: &str,
    stdio: [RawFd; 3],
    keep: &[RawFd],
    args: impl FnOnce([RawFd; 3]) -> ChildArgs<'a>,
) -> Result<libc::pid_t, ContainerError> {
    // SAFETY: the child only runs `intermediate_main`, which ends in _exit; glibc's fork
    // makes malloc usable in the child even if other agent threads held its locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ContainerError::sys(id, "fork", io::Error::last_os_error()));
    }
    if pid == 0 {
        let moved = match isolate_fds(stdio, keep) {
            Ok(m) => m,
            // SAFETY: fresh fork, nothing to clean up.
            Err(_) => unsafe { libc::_exit(1) },
        };
        intermediate_main(&args(moved));
    }
    Ok(pid)
}

/// In a fresh fork: moves `fds` above 2 (so dup2 onto 0..2 cannot clobber them) and closes
/// every fd not listed, so no other container's pipes or sockets leak into this one.
/// Returns the moved fds in order.
pub fn isolate_fds(stdio: [RawFd; 3], keep: &[RawFd]) -> io::Result<[RawFd; 3]> {
    let mut moved = [0; 3];
    for (m, fd) in moved.iter_mut().zip(stdio) {
        // SAFETY: fcntl on an fd number; failure is reported through errno.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        *m = new;
    }
    let mut keep: Vec<RawFd> = keep.iter().copied().chain(moved).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next: RawFd = 0;
    for fd in keep.into_iter().chain(std::iter::once(RawFd::MAX)) {
        if fd > next {
            let last = if fd == RawFd::MAX {
                libc::c_uint::MAX
            } else {
                (fd - 1) as libc::c_uint
            };
            // SAFETY: closing fd numbers this fresh fork does not use.
            unsafe { libc::syscall(libc::SYS_close_range, next as libc::c_uint, last, 0u32) };
        }
        next = fd.saturating_add(1);
    }
    Ok(moved)
}
