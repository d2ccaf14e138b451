//! Child processes that cannot outlive their owner.
//!
//! Every sandbox process (the VMM, or the agent's namespace wrapper) is started with
//! `PR_SET_PDEATHSIG(SIGKILL)`: when the thread that spawned it dies, for any reason including
//! SIGKILL, the kernel kills the child. The closures below run between fork and exec, so they use
//! raw libc calls only (no allocation, no locks).

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Which namespaces the `namespaces` back-end gives its agent. The agent runs under a minimal
/// PID 1 of a fresh PID namespace that exits with it, and the kernel then kills every container
/// process it started; its mounts live in a private mount namespace and vanish with it.
pub const AGENT_NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl/getppid are async-signal-safe and take no pointers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died between fork and prctl; then nobody would ever signal us.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// In a child before exec: die with `parent`'s spawning thread, in a process group of its own.
/// Only async-signal-safe calls.
fn owned_by(parent: libc::pid_t) -> io::Result<()> {
    die_with_parent(parent)?;
    // SAFETY: setpgid only changes this process's group.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` so that it is SIGKILLed when the calling thread exits, in its own process group
/// (a Ctrl-C on the owner's terminal goes to the owner, which decides what to forward).
pub fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || owned_by(parent));
    }
    cmd.spawn()
}

/// Makes each open descriptor `source` of ours descriptor `target` of `cmd`'s process, inherited
/// across exec, for every `(source, target)` of `fds`: every source is first copied above the
/// targets, so one pair's target may be another pair's source.
pub fn pass_fds(cmd: &mut Command, fds: Vec<(RawFd, RawFd)>) {
    let above = fds.iter().map(|&(_, target)| target).max().unwrap_or(0) + 1;
    let mut copies = vec![-1; fds.len()];
    // SAFETY: between fork and exec; fcntl and dup2 are async-signal-safe, and the buffer was
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for (copy, &(source, _)) in copies.iter_mut().zip(&fds) {
                // Close-on-exec: the copies go at exec, the targets stay.
                *copy = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above);
                if *copy < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (&copy, &(_, target)) in copies.iter().zip(&fds) {
                if libc::dup2(copy, target) != target {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s process join the cgroups whose `cgroup.procs` files are `procs` before it
/// execs (it writes `0`, itself), so it allocates nothing outside them.
pub fn join_cgroup(cmd: &mut Command, procs: Vec<CString>) {
    // SAFETY: between fork and exec; open, write and close are async-signal-safe, and the
    // paths were made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, c"0".as_ptr().cast(), 1);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
            Ok(())
        });
    }
}

/// Starts `cmd`'s process in the network namespace open as `namespace`.
pub fn enter_network_namespace(cmd: &mut Command, namespace: RawFd) {
    // SAFETY: between fork and exec; setns is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(namespace, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `cmd` in fresh namespaces (see [`AGENT_NAMESPACES`]) with a private mount propagation
/// and its own /proc. Process tree, all with a parent-death signal:
///
/// * the returned child: a waiter in our PID namespace whose exit status is the agent's;
/// * its child: PID 1 of the new PID namespace, a minimal init that reaps and exits with the
///   agent (the kernel then kills everything left in the namespace);
/// * its child: `cmd` (PID 2), so that the agent runs in host mode, not as a guest's init.
pub fn spawn_in_namespaces(cmd: Command) -> io::Result<Child> {
    spawn_under_init(cmd, AGENT_NAMESPACES, true)
}

/// Spawns `cmd` as PID 2 of a fresh PID namespace under the minimal init of
/// [`spawn_in_namespaces`], nothing else changed. When the owner dies the kernel kills every
/// process in that namespace, nested namespaces included: a parent-death signal alone does not
/// end a process that is the init of a PID namespace of its own and catches that signal
/// (virtiofsd's sandboxed child, which waits in accept()).
pub fn spawn_in_pid_namespace(cmd: Command) -> io::Result<Child> {
    spawn_under_init(cmd, libc::CLONE_NEWPID, false)
}

/// The waiter / init / `cmd` tree in new namespaces `flags`; `agent_mounts`: private mount
/// propagation and a /proc of the new PID namespace (the agent's).
fn spawn_under_init(mut cmd: Command, flags: libc::c_int, agent_mounts: bool) -> io::Result<Child> {
    under_init(&mut cmd, flags, agent_mounts);
    cmd.spawn()
}

/// Namespaces the jailed VMM gets: its own mounts (the jail's binds), PIDs (it is PID 2 under
/// our minimal init), IPC, hostname and an empty network (its tap comes as a descriptor).
pub const JAIL_NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET;

/// Spawns `cmd` as PID 2 under the minimal init of [`spawn_in_namespaces`], in fresh
/// [`JAIL_NAMESPACES`], inside `jail` ([`crate::jail::enter`]): `cmd`'s program must be a path
/// inside the jail. A step of the jail that fails fails the spawn with its error (and names
/// itself on the child's stderr).
pub fn spawn_jailed(mut cmd: Command, jail: crate::jail::PreparedJail) -> io::Result<Child> {
    under_init(&mut cmd, JAIL_NAMESPACES, false);
    // SAFETY: runs in PID 2 after the forks (pre_exec closures run in order), in its own mount
    // namespace; `enter` makes async-signal-safe calls only.
    unsafe {
        cmd.pre_exec(move || crate::jail::enter(&jail));
    }
    cmd.spawn()
}

/// Adds to `cmd` the waiter / init / `cmd` tree of [`spawn_under_init`].
fn under_init(cmd: &mut Command, flags: libc::c_int, agent_mounts: bool) {
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe calls (fork, waitpid, mount, _exit, ...).
    unsafe {
        cmd.pre_exec(move || {
            owned_by(parent)?;
            if libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            let root = c"/".as_ptr();
            if agent_mounts
                && libc::mount(
                    std::ptr::null(),
                    root,
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {}
                init => wait_and_exit_like(init, false),
            }
            // PID 1 of the new namespace.
            set_pdeathsig()?;
            let proc_ = c"proc".as_ptr();
            let target = c"/proc".as_ptr();
            if agent_mounts
                && libc::mount(
                    proc_,
                    target,
                    proc_,
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                // PID 2: becomes the agent at exec.
                0 => set_pdeathsig(),
                agent => wait_and_exit_like(agent, true),
            }
        });
    }
}

/// Waits for `pid` (reaping any other child on the way when `reap_all`) and exits with its
/// status. Never returns. First drops every descriptor but stdio: holding std's exec-error pipe
/// would make spawn() wait for the agent's exit.
///
/// # Safety
/// Only between fork and exec, in a process that owns nothing else.
unsafe fn wait_and_exit_like(pid: libc::pid_t, reap_all: bool) -> ! {
    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    let mut status = 0;
    loop {
        let r = libc::waitpid(if reap_all { -1 } else { pid }, &mut status, 0);
        if r == pid {
            break;
        }
        if r == -1 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(125);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    libc::_exit(128 + libc::WTERMSIG(status));
}

/// PDEATHSIG without the getppid() check: in a new PID namespace getppid() is 0 (the parent is
/// outside). The parent is covered by its own PDEATHSIG, so the chain holds.
fn set_pdeathsig() -> io::Result<()> {
    // SAFETY: prctl takes no pointers here.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// stdout/stderr of a sandbox process go to its log file (the guest console or the agent log).
pub fn log_stdio(log: &Path) -> io::Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// Sends SIGKILL to `child` and reaps it. Harmless when it already exited.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The direct children of `pid` (from /proc; used to find the agent under its waiter).
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    if let Ok(text) = std::fs::read_to_string(path) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out = Vec::new();
    for (candidate, status) in proc_statuses() {
        if status_field(&status, "PPid:").and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
            out.push(candidate);
        }
    }
    out
}

/// Every process's `/proc/<pid>/status` text.
pub fn proc_statuses() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                out.push((pid, status));
            }
        }
    }
    out
}

pub fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// Translates a PID as seen inside the PID namespace of host process `ancestor` (the agent) into
/// a host PID, using the `NSpid:` lines of /proc (our PID first, then each nested namespace).
/// Only descendants of `ancestor` count, so equal numbers in other sandboxes are not confused.
pub fn host_pid_in_namespace(ancestor: u32, inner_pid: u32) -> Option<u32> {
    let statuses = proc_statuses();
    let ppid_of = |pid: u32| -> Option<u32> {
        statuses
            .iter()
            .find(|(p, _)| *p == pid)
            .and_then(|(_, s)| status_field(s, "PPid:"))
            .and_then(|v| v.parse().ok())
    };
    for (pid, status) in &statuses {
        let Some(nspid) = status_field(status, "NSpid:") else {
            continue;
        };
        let levels: Vec<u32> = nspid
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if levels.get(1) != Some(&inner_pid) {
            continue;
        }
        let mut cursor = *pid;
        for _ in 0..64 {
            match ppid_of(cursor) {
                Some(p) if p == ancestor => return Some(*pid),
                Some(p) if p > 1 => cursor = p,
                _ => break,
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn passed_descriptors_may_trade_places() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file_a = std::fs::File::create(&a).expect("a");
        let file_b = std::fs::File::create(&b).expect("b");
        let (fd_a, fd_b) = (file_a.as_raw_fd(), file_b.as_raw_fd());
        // Each target is the other pair's source.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "readlink /proc/self/fd/{fd_a} /proc/self/fd/{fd_b}"
            ))
            .stdout(Stdio::piped());
        pass_fds(&mut cmd, vec![(fd_a, fd_b), (fd_b, fd_a)]);
        let out = cmd.output().expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [b.display().to_string(), a.display().to_string()],
            "{text}"
        );
    }
}
