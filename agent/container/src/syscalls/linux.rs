//! The real syscalls.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use caps::{CapSet, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{Gid, Uid};

use super::{in_root_path, FileKind, MountPoint, MountPointKind, Syscalls};
use crate::error::errno_io;

/// The real [`Syscalls`]: libc, nix and caps calls on the running kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscalls;

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Syscalls for LinuxSyscalls {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        nix::sched::unshare(flags).map_err(errno_io)
    }

    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> io::Result<()> {
        // SAFETY: setns only reads the fd number; an invalid fd yields EBADF.
        let rc = unsafe { libc::setns(fd, nstype.bits()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(errno_io)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(errno_io)
    }

    fn flush_block_device(&self, device: &Path) -> io::Result<()> {
        // _IO(0x12, 97): not exported by the libc crate for every target.
        const BLKFLSBUF: libc::c_ulong = 0x1261;
        let dev = fs::File::open(device)?;
        // SAFETY: BLKFLSBUF takes no argument and touches no user memory.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), BLKFLSBUF as _, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(errno_io)
    }

    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        let vfs = statvfs(path).map_err(errno_io)?;
        let f = vfs.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn mount_point(
        &self,
        root: &Path,
        path: &Path,
        kind: MountPointKind,
    ) -> io::Result<MountPoint> {
        let fd = super::in_root::open_mount_point(root, path, kind)?;
        // Without a /proc (after pivot_root into a spec that mounts none) there is no
        // /proc/self/fd to mount on: the path itself, which resolves inside the new root.
        let fd = Path::new("/proc/self/fd").is_dir().then_some(fd);
        Ok(MountPoint::new(in_root_path(root, path), fd))
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(errno_io)
    }

    fn reset_signals(&self) -> io::Result<()> {
        /// The kernel's struct sigaction (glibc's wrapper refuses its reserved 32 and 33).
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: u64,
            restorer: usize,
            mask: u64,
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: `default` is a valid kernel sigaction; SIG_DFL runs no code of ours.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        nix::sys::signal::SigSet::empty()
            .thread_set_mask()
            .map_err(errno_io)
    }

    fn file_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        match fs::symlink_metadata(path) {
            Ok(m) => {
                let t = m.file_type();
                Ok(Some(if t.is_dir() {
                    FileKind::Directory
                } else if t.is_file() {
                    FileKind::File
                } else if t.is_symlink() {
                    FileKind::Symlink
                } else {
                    FileKind::Other
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> io::Result<()> {
        nix::sys::stat::mknod(path, kind, perm, dev).map_err(errno_io)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        nix::unistd::chown(path, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).map_err(errno_io)
    }

    fn fchown(&self, fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: fchown on a plain fd number; failure is reported through errno.
        if unsafe { libc::fchown(fd, uid, gid) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        fs::write(path, data)
    }

    fn is_executable(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|m| m.is_file())
            && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno_io)
    }

    fn setdomainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: the pointer and length describe `name`, which outlives the call.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit for the duration of the call.
        let rc = unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &lim) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_capabilities(&self, set: CapSet, wanted: &CapsHashSet) -> io::Result<()> {
        if matches!(set, CapSet::Bounding) {
            let current = caps::read(None, CapSet::Bounding).map_err(caps_err)?;
            for cap in current.difference(wanted) {
                caps::drop(None, CapSet::Bounding, *cap).map_err(caps_err)?;
            }
            Ok(())
        } else {
            caps::set(None, set, wanted).map_err(caps_err)
        }
    }

    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        nix::sys::prctl::set_keepcaps(keep).map_err(errno_io)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(errno_io)
    }

    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        let gids: Vec<Gid> = gids.iter().copied().map(Gid::from_raw).collect();
        nix::unistd::setgroups(&gids).map_err(errno_io)
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(errno_io)
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(errno_io)
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }

    fn setsid(&self) -> io::Result<()> {
        nix::unistd::setsid().map(|_| ()).map_err(errno_io)
    }

    fn open_pty(&self, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
        let open = |path: &Path| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .map(OwnedFd::from)
        };
        let ioctl_err = |what: &str| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        let master = open(Path::new("/dev/ptmx"))
            .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/ptmx: {e}")))?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int through the pointer, which is valid for the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
            return Err(ioctl_err("unlocking the pty"));
        }
        let mut index: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes an unsigned int through the pointer, valid for the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index) } != 0 {
            return Err(ioctl_err("reading the pty number"));
        }
        let slave_path = format!("/dev/pts/{index}");
        let slave = open(Path::new(&slave_path))
            .map_err(|e| io::Error::new(e.kind(), format!("opening {slave_path}: {e}")))?;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize through the pointer, valid for the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(ioctl_err("setting the terminal size"));
        }
        Ok((master, slave))
    }

    fn set_controlling_terminal(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: TIOCSCTTY takes an int argument, no pointers.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn dup2(&self, old: RawFd, new: RawFd) -> io::Result<()> {
        // SAFETY: dup2 on plain fd numbers; failures are reported through errno.
        let rc = unsafe { libc::dup2(old, new) };
        if rc >= 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn cloexec_from(&self, first: RawFd) -> io::Result<()> {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn load_seccomp(&self, filter: &libseccomp::ScmpFilterContext) -> io::Result<()> {
        filter.load().map_err(|e| io::Error::other(e.to_string()))
    }

    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
        match nix::unistd::execve(path, args, env) {
            Err(e) => errno_io(e),
            Ok(never) => match never {},
        }
    }

    fn pidfd_open(&self, pid: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes plain integers and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn pidfd_send_signal(&self, pidfd: RawFd, signal: i32) -> io::Result<()> {
        // SAFETY: no siginfo pointer is passed (NULL), flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        // SAFETY: kill takes plain integers.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
