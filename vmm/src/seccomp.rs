//! Per-thread seccomp filters (seccompiler): once the VM is built, each VMM thread may only make
//! the system calls its role needs while the guest runs, and anything else kills the VMM
//! (`SECCOMP_RET_KILL_PROCESS`). A vCPU thread installs its filter before its first `KVM_RUN`;
//! the VMM thread (device events) after starting the vCPUs and before serving the first event.
//!
//! The lists come from `strace -f` of whole pod runs on an instruction-emulating (PVM) host
//! (docs/security.md says how to measure them again): what the threads called after the point
//! where the filter goes in, and what the code paths not reached there call (error paths,
//! exit). `ioctl` is allowed for the requests the VMM makes, no other.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Which filter a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRole {
    /// The thread that built the VM and serves device events (blk, vsock, net, serial input).
    Vmm,
    /// A vCPU thread: `KVM_RUN`, its exits (MMIO and port I/O to the devices), reflection.
    Vcpu,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the {0:?} thread's seccomp filter")]
    Build(ThreadRole, #[source] seccompiler::BackendError),
    #[error("compiling the {0:?} thread's seccomp filter")]
    Compile(ThreadRole, #[source] seccompiler::BackendError),
    #[error("installing the {0:?} thread's seccomp filter")]
    Install(ThreadRole, #[source] seccompiler::Error),
}

/// Confines the calling thread to `role`'s system calls, for good (it sets no_new_privs).
pub fn install(role: ThreadRole) -> Result<(), SeccompError> {
    let program = program(role)?;
    seccompiler::apply_filter(&program).map_err(|e| SeccompError::Install(role, e))
}

/// `role`'s filter as BPF.
pub fn program(role: ThreadRole) -> Result<BpfProgram, SeccompError> {
    let build = |e| SeccompError::Build(role, e);
    let filter = SeccompFilter::new(
        rules(role).map_err(build)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(build)?;
    filter
        .try_into()
        .map_err(|e| SeccompError::Compile(role, e))
}

/// The KVM ioctls made while the guest runs (from linux/kvm.h: `_IO`/`_IOR`/`_IOW`/`_IOWR` of
/// type 0xAE).
mod kvm {
    pub const RUN: u64 = 0xae80;
    pub const GET_REGS: u64 = 0x8090_ae81;
    pub const SET_REGS: u64 = 0x4090_ae82;
    pub const GET_SREGS: u64 = 0x8138_ae83;
    pub const GET_FPU: u64 = 0x81a0_ae8c;
    pub const TRANSLATE: u64 = 0xc018_ae85;
    pub const GET_VCPU_EVENTS: u64 = 0x8040_ae9f;
    pub const SET_VCPU_EVENTS: u64 = 0x4040_aea0;
    pub const IRQ_LINE: u64 = 0x4008_ae61;
}

/// Tap ioctl the net device makes when the driver (re)negotiates offloads.
const TUNSETOFFLOAD: u64 = 0x4004_54d0;

fn rules(role: ThreadRole) -> Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let mut allowed: Vec<i64> = vec![
        // I/O on descriptors opened while building: eventfds, the console, the log, sockets.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        // Memory (the allocator) and threads' synchronisation.
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_rseq,
        // Time (normally the vDSO), sleeping, randomness for hash maps.
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_getrandom,
        // Signals: the vCPU kick, and dying of one (abort).
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_restart_syscall,
    ];
    let mut ioctls = vec![kvm::IRQ_LINE];
    match role {
        ThreadRole::Vmm => {
            allowed.extend([
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
                // Block devices.
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_fdatasync,
                libc::SYS_fsync,
                // vsock: host clients, guest-initiated connections to host sockets, exit.
                libc::SYS_accept4,
                libc::SYS_connect,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
                libc::SYS_recvmsg,
                libc::SYS_sendmsg,
                libc::SYS_shutdown,
                libc::SYS_unlink,
                // Joining the vCPU threads at the end.
                libc::SYS_munmap,
            ]);
            ioctls.extend([libc::FIONBIO, TUNSETOFFLOAD]);
        }
        ThreadRole::Vcpu => {
            allowed.extend([
                // The vhost-user front-end of virtio-fs talks to virtiofsd when the driver
                // starts or resets the device.
                libc::SYS_sendmsg,
                libc::SYS_recvmsg,
            ]);
            ioctls.extend([
                kvm::RUN,
                kvm::GET_REGS,
                kvm::SET_REGS,
                kvm::GET_SREGS,
                kvm::GET_FPU,
                kvm::TRANSLATE,
                kvm::GET_VCPU_EVENTS,
                kvm::SET_VCPU_EVENTS,
                TUNSETOFFLOAD,
            ]);
        }
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed.into_iter().map(|nr| (nr, Vec::new())).collect();
    rules.insert(
        libc::SYS_ioctl,
        ioctls
            .into_iter()
            .map(|request| arg_is(1, request))
            .collect::<Result<_, _>>()?,
    );
    // Descriptor flags: non-blocking sockets; Rust's debug builds check a descriptor is open
    // (F_GETFD) before closing it.
    rules.insert(
        libc::SYS_fcntl,
        [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL]
            .into_iter()
            .map(|cmd| arg_is(1, cmd as u64))
            .collect::<Result<_, _>>()?,
    );
    // Signals to this process's own threads only (the vCPU kick, abort).
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() } as u64;
    rules.insert(libc::SYS_tgkill, vec![arg_is(0, pid)?]);
    // Only Unix sockets: vsock connections to the host's `<uds>_<port>` listeners.
    if role == ThreadRole::Vmm {
        rules.insert(libc::SYS_socket, vec![arg_is(0, libc::AF_UNIX as u64)?]);
    }
    Ok(rules)
}

/// A rule matching when argument `index` (its low 32 bits) is `value`.
fn arg_is(index: u8, value: u64) -> Result<SeccompRule, BackendError> {
    let condition = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
    SeccompRule::new(vec![condition])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that installs `role`'s filter, then runs `then`; its wait status.
    fn in_confined_child(role: ThreadRole, then: fn()) -> i32 {
        // Built before the fork: the child only installs it and makes its calls.
        let program = program(role).expect("filter");
        // SAFETY: the child only makes system calls and _exits.
        match unsafe { libc::fork() } {
            0 => {
                if seccompiler::apply_filter(&program).is_err() {
                    // SAFETY: as above.
                    unsafe { libc::_exit(2) };
                }
                then();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                status
            }
        }
    }

    #[test]
    fn a_forbidden_call_kills_the_process_and_allowed_ones_do_not() {
        for role in [ThreadRole::Vmm, ThreadRole::Vcpu] {
            // Opening a file is for building the VM, not for running it.
            let status = in_confined_child(role, || {
                // SAFETY: a plain system call; the filter kills us before it runs.
                unsafe {
                    libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/etc/passwd".as_ptr(), 0)
                };
            });
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
                "{role:?}: status {status:#x}"
            );
            let status = in_confined_child(role, || {
                // SAFETY: as above; both are on every thread's list.
                unsafe {
                    libc::syscall(libc::SYS_getpid);
                    libc::syscall(libc::SYS_write, 2, c"".as_ptr(), 0);
                }
            });
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{role:?}: status {status:#x}"
            );
        }
    }

    #[test]
    fn ioctls_are_allowed_by_request_only() {
        let status = in_confined_child(ThreadRole::Vmm, || {
            // SAFETY: as above. TIOCGWINSZ is no request the VMM makes.
            unsafe { libc::ioctl(2, libc::TIOCGWINSZ, std::ptr::null_mut::<u8>()) };
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS);
    }

    #[test]
    fn kvm_request_numbers_match_the_structures() {
        use std::mem::size_of;
        let ior = |nr: u64, size: usize| (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
        let iow = |nr: u64, size: usize| (1 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
        let iowr = |nr: u64, size: usize| (3 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
        assert_eq!(
            kvm::GET_REGS,
            ior(0x81, size_of::<kvm_bindings::kvm_regs>())
        );
        assert_eq!(
            kvm::SET_REGS,
            iow(0x82, size_of::<kvm_bindings::kvm_regs>())
        );
        assert_eq!(
            kvm::GET_SREGS,
            ior(0x83, size_of::<kvm_bindings::kvm_sregs>())
        );
        assert_eq!(kvm::GET_FPU, ior(0x8c, size_of::<kvm_bindings::kvm_fpu>()));
        assert_eq!(
            kvm::TRANSLATE,
            iowr(0x85, size_of::<kvm_bindings::kvm_translation>())
        );
        assert_eq!(
            kvm::GET_VCPU_EVENTS,
            ior(0x9f, size_of::<kvm_bindings::kvm_vcpu_events>())
        );
        assert_eq!(
            kvm::SET_VCPU_EVENTS,
            iow(0xa0, size_of::<kvm_bindings::kvm_vcpu_events>())
        );
        assert_eq!(
            kvm::IRQ_LINE,
            iow(0x61, size_of::<kvm_bindings::kvm_irq_level>())
        );
    }
}
