//! Every syscall the container library makes goes through [`Syscalls`], so the translation of
//! a spec into mounts, ids, capabilities and limits is unit-tested without root with
//! `recording::RecordingSyscalls` (the crate's test double, built for its unit tests only).
//! [`LinuxSyscalls`] is the real implementation.
//!
//! Paths are taken as given: the callers resolve them (inside the rootfs where needed).

mod in_root;
mod linux;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
pub mod recording;

pub(crate) use in_root::in_root_path;
pub use linux::LinuxSyscalls;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

/// What is at a path (without following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
    Other,
}

/// What [`Syscalls::mount_point`] makes at the destination when nothing is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountPointKind {
    /// A directory (and its missing parents).
    Directory,
    /// An empty regular file (and its missing parent directories).
    File,
    /// Nothing: the destination must exist.
    Existing,
}

/// A mount destination held open: what is mounted on [`MountPoint::target`] lands on the inode
/// that was resolved, even if a component of its path is swapped for a symlink afterwards.
#[derive(Debug)]
pub struct MountPoint {
    /// Where the destination was, for messages.
    pub path: PathBuf,
    /// Its `O_PATH` descriptor (the recording double has none).
    fd: Option<OwnedFd>,
}

impl MountPoint {
    pub fn new(path: PathBuf, fd: Option<OwnedFd>) -> MountPoint {
        MountPoint { path, fd }
    }

    /// What to give mount(2) and statvfs: `/proc/self/fd/N`, which the kernel follows to the
    /// open inode whatever happened to the path since (the path itself without a descriptor).
    pub fn target(&self) -> PathBuf {
        match &self.fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.path.clone(),
        }
    }
}

/// The syscalls of the library, one method each (a few are small sequences, documented as
/// such). Paths are taken as given: the callers resolve them inside the rootfs. The real
/// implementation is [`LinuxSyscalls`]; a test double changes nothing and records the calls.
// The real implementation (linux.rs) and the recording double (recording.rs) repeat these
// signatures: that is what implementing a trait is, not a twin to merge.
pub trait Syscalls: Send + Sync + std::fmt::Debug {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> io::Result<()>;

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// Drops the page cache of a block device (ioctl BLKFLSBUF): its content may have been
    /// rewritten from the host since the guest last read it.
    fn flush_block_device(&self, device: &Path) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// The mount flags (MS_RDONLY, MS_NOSUID, ...) a mounted path has now, for remounts that
    /// must keep the locked ones.
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags>;

    /// Opens the mount destination `path` (a container path) inside `root` without leaving
    /// it: symlinks resolve as if `root` were `/` and `..` stops there; missing components are
    /// created relative to descriptors already open, never through a path string, the last
    /// one as `kind` says.
    fn mount_point(&self, root: &Path, path: &Path, kind: MountPointKind)
        -> io::Result<MountPoint>;

    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// Unblocks every signal and sets every disposition back to default: the agent's signal
    /// setup must not reach container processes (ignored signals survive execve).
    fn reset_signals(&self) -> io::Result<()>;
    fn file_kind(&self, path: &Path) -> io::Result<Option<FileKind>>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file (and its parents) unless something exists there.
    fn create_file(&self, path: &Path) -> io::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()>;
    fn fchown(&self, fd: RawFd, uid: u32, gid: u32) -> io::Result<()>;
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn is_executable(&self, path: &Path) -> bool;

    fn sethostname(&self, name: &str) -> io::Result<()>;
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> io::Result<()>;

    /// Replaces a capability set. For `CapSet::Bounding` it drops everything not in `caps`.
    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()>;
    fn set_keep_caps(&self, keep: bool) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn setgroups(&self, gids: &[u32]) -> io::Result<()>;
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    fn umask(&self, mask: u32);

    fn setsid(&self) -> io::Result<()>;
    /// Opens a new pty through `/dev/ptmx` as this process sees it (inside the container: its
    /// own devpts instance), unlocks it and opens its slave, both without becoming the
    /// controlling terminal, and sets its size. Returns (master, slave), close-on-exec.
    fn open_pty(&self, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)>;
    fn set_controlling_terminal(&self, fd: RawFd) -> io::Result<()>;
    fn dup2(&self, old: RawFd, new: RawFd) -> io::Result<()>;
    /// Marks every fd from `first` up close-on-exec.
    fn cloexec_from(&self, first: RawFd) -> io::Result<()>;

    fn load_seccomp(&self, filter: &libseccomp::ScmpFilterContext) -> io::Result<()>;
    /// Only returns on failure.
    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> io::Error;
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()>;
    /// A pidfd keeps naming the process after it exits, so a reaped and reused pid is never
    /// signalled by mistake.
    fn pidfd_open(&self, pid: i32) -> io::Result<OwnedFd>;
    fn pidfd_send_signal(&self, pidfd: RawFd, signal: i32) -> io::Result<()>;
}
