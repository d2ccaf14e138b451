//! A [`Syscalls`] that is [`LinuxSyscalls`] except for one thing: right before the mount whose
//! options carry [`MARKER`], it swaps a directory of the rootfs for a symlink to a directory
//! outside it — what another container sharing that directory could do at that moment (the
//! CVE-2021-30465 class). Everything else goes straight to the real syscalls.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use caps::{CapSet, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use rust_vm_container::{FileKind, LinuxSyscalls, MountPoint, MountPointKind, Syscalls};

/// The mount data that triggers the swap.
pub const MARKER: &str = "size=4244k";

#[derive(Debug)]
pub struct SwapBeforeMount {
    /// Renamed to `<dir>.real`, and a symlink to `outside` put in its place.
    pub dir: PathBuf,
    pub outside: PathBuf,
    swapped: AtomicBool,
}

impl SwapBeforeMount {
    pub fn new(dir: PathBuf, outside: PathBuf) -> SwapBeforeMount {
        SwapBeforeMount {
            dir,
            outside,
            swapped: AtomicBool::new(false),
        }
    }

    fn swap(&self) -> io::Result<()> {
        let mut real = self.dir.clone().into_os_string();
        real.push(".real");
        fs::rename(&self.dir, &real)?;
        std::os::unix::fs::symlink(&self.outside, &self.dir)
    }
}

impl Syscalls for SwapBeforeMount {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        if data.is_some_and(|d| d.contains(MARKER)) && !self.swapped.swap(true, Ordering::SeqCst) {
            self.swap()?;
        }
        LinuxSyscalls.mount(source, target, fstype, flags, data)
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        LinuxSyscalls.unshare(flags)
    }
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> io::Result<()> {
        LinuxSyscalls.setns(fd, nstype)
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        LinuxSyscalls.umount2(target, flags)
    }
    fn flush_block_device(&self, device: &Path) -> io::Result<()> {
        LinuxSyscalls.flush_block_device(device)
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        LinuxSyscalls.pivot_root(new_root, put_old)
    }
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        LinuxSyscalls.mount_flags(path)
    }
    fn mount_point(
        &self,
        root: &Path,
        path: &Path,
        kind: MountPointKind,
    ) -> io::Result<MountPoint> {
        LinuxSyscalls.mount_point(root, path, kind)
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        LinuxSyscalls.chdir(path)
    }
    fn reset_signals(&self) -> io::Result<()> {
        LinuxSyscalls.reset_signals()
    }
    fn file_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        LinuxSyscalls.file_kind(path)
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        LinuxSyscalls.mkdir_all(path, mode)
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        LinuxSyscalls.create_file(path)
    }
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> io::Result<()> {
        LinuxSyscalls.mknod(path, kind, perm, dev)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        LinuxSyscalls.symlink(target, link)
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        LinuxSyscalls.chown(path, uid, gid)
    }
    fn fchown(&self, fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
        LinuxSyscalls.fchown(fd, uid, gid)
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        LinuxSyscalls.write_file(path, data)
    }
    fn is_executable(&self, path: &Path) -> bool {
        LinuxSyscalls.is_executable(path)
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        LinuxSyscalls.sethostname(name)
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        LinuxSyscalls.setdomainname(name)
    }
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> io::Result<()> {
        LinuxSyscalls.setrlimit(resource, soft, hard)
    }
    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        LinuxSyscalls.set_capabilities(set, caps)
    }
    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        LinuxSyscalls.set_keep_caps(keep)
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        LinuxSyscalls.set_no_new_privs()
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        LinuxSyscalls.setgroups(gids)
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        LinuxSyscalls.setresgid(gid)
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        LinuxSyscalls.setresuid(uid)
    }
    fn umask(&self, mask: u32) {
        LinuxSyscalls.umask(mask)
    }
    fn setsid(&self) -> io::Result<()> {
        LinuxSyscalls.setsid()
    }
    fn open_pty(&self, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
        LinuxSyscalls.open_pty(rows, cols)
    }
    fn set_controlling_terminal(&self, fd: RawFd) -> io::Result<()> {
        LinuxSyscalls.set_controlling_terminal(fd)
    }
    fn dup2(&self, old: RawFd, new: RawFd) -> io::Result<()> {
        LinuxSyscalls.dup2(old, new)
    }
    fn cloexec_from(&self, first: RawFd) -> io::Result<()> {
        LinuxSyscalls.cloexec_from(first)
    }
    fn load_seccomp(&self, filter: &libseccomp::ScmpFilterContext) -> io::Result<()> {
        LinuxSyscalls.load_seccomp(filter)
    }
    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
        LinuxSyscalls.execve(path, args, env)
    }
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        LinuxSyscalls.kill(pid, signal)
    }
    fn pidfd_open(&self, pid: i32) -> io::Result<OwnedFd> {
        LinuxSyscalls.pidfd_open(pid)
    }
    fn pidfd_send_signal(&self, pidfd: RawFd, signal: i32) -> io::Result<()> {
        LinuxSyscalls.pidfd_send_signal(pidfd, signal)
    }
}
