//! A `Syscalls` that changes nothing: it records every call and keeps a tiny in-memory file
//! tree, so tests can assert exactly which syscalls a spec turns into.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use caps::{CapSet, CapsHashSet};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

use super::{in_root_path, FileKind, MountPoint, MountPointKind, Syscalls};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Unshare(CloneFlags),
    Setns(RawFd, CloneFlags),
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2(PathBuf, MntFlags),
    FlushBlockDevice(PathBuf),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    ResetSignals,
    MkdirAll(PathBuf, u32),
    CreateFile(PathBuf),
    Mknod(PathBuf, SFlag, u32, u64),
    Symlink(PathBuf, PathBuf),
    Chown(PathBuf, Option<u32>, Option<u32>),
    Fchown(RawFd, u32, u32),
    WriteFile(PathBuf, Vec<u8>),
    Sethostname(String),
    Setdomainname(String),
    Setrlimit(i32, u64, u64),
    /// The set by name: "bounding", "effective", ...
    SetCapabilities(&'static str, CapsHashSet),
    SetKeepCaps(bool),
    SetNoNewPrivs,
    Setgroups(Vec<u32>),
    Setresgid(u32),
    Setresuid(u32),
    Umask(u32),
    Setsid,
    OpenPty(u16, u16),
    SetControllingTerminal(RawFd),
    Dup2(RawFd, RawFd),
    CloexecFrom(RawFd),
    LoadSeccomp,
    Execve(CString, Vec<CString>, Vec<CString>),
    Kill(i32, i32),
    PidfdOpen(i32),
    PidfdSendSignal(i32),
}

type FailRule = Box<dyn Fn(&Call) -> Option<i32> + Send + Sync>;

#[derive(Default)]
pub struct RecordingSyscalls {
    calls: Mutex<Vec<Call>>,
    files: Mutex<HashMap<PathBuf, FileKind>>,
    mount_flags: Mutex<HashMap<PathBuf, MsFlags>>,
    fail: Mutex<Option<FailRule>>,
}

impl std::fmt::Debug for RecordingSyscalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSyscalls").finish_non_exhaustive()
    }
}

impl RecordingSyscalls {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pretends that `path` exists with the given kind.
    pub fn add_file(&self, path: impl Into<PathBuf>, kind: FileKind) {
        self.files
            .lock()
            .expect("recording lock")
            .insert(path.into(), kind);
    }

    pub fn set_mount_flags(&self, path: impl Into<PathBuf>, flags: MsFlags) {
        self.mount_flags
            .lock()
            .expect("recording lock")
            .insert(path.into(), flags);
    }

    /// Makes every call for which `rule` returns `Some(errno)` fail with that errno.
    pub fn fail_when(&self, rule: impl Fn(&Call) -> Option<i32> + Send + Sync + 'static) {
        *self.fail.lock().expect("recording lock") = Some(Box::new(rule));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("recording lock").clone()
    }

    fn record(&self, call: Call) -> io::Result<()> {
        let errno = self
            .fail
            .lock()
            .expect("recording lock")
            .as_ref()
            .and_then(|rule| rule(&call));
        self.calls.lock().expect("recording lock").push(call);
        match errno {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }

    fn add_with_parents(&self, path: &Path, kind: FileKind) {
        let mut files = self.files.lock().expect("recording lock");
        for p in path.ancestors().skip(1) {
            files.entry(p.to_path_buf()).or_insert(FileKind::Directory);
        }
        files.entry(path.to_path_buf()).or_insert(kind);
    }
}

impl Syscalls for RecordingSyscalls {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(Call::Unshare(flags))
    }
    fn setns(&self, fd: RawFd, nstype: CloneFlags) -> io::Result<()> {
        self.record(Call::Setns(fd, nstype))
    }
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        })
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount2(target.to_path_buf(), flags))
    }
    fn flush_block_device(&self, device: &Path) -> io::Result<()> {
        self.record(Call::FlushBlockDevice(device.to_path_buf()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(Call::PivotRoot(
            new_root.to_path_buf(),
            put_old.to_path_buf(),
        ))
    }
    fn mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        Ok(self
            .mount_flags
            .lock()
            .expect("recording lock")
            .get(path)
            .copied()
            .unwrap_or(MsFlags::empty()))
    }
    /// Lexical (the double knows no symlinks): creates as `mkdir_all` and `create_file` would
    /// and records those calls.
    fn mount_point(
        &self,
        root: &Path,
        path: &Path,
        kind: MountPointKind,
    ) -> io::Result<MountPoint> {
        let full = in_root_path(root, path);
        match kind {
            MountPointKind::Directory => self.mkdir_all(&full, 0o755)?,
            MountPointKind::File => self.create_file(&full)?,
            MountPointKind::Existing => {
                if self.file_kind(&full)?.is_none() {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
            }
        }
        Ok(MountPoint::new(full, None))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.to_path_buf()))
    }
    fn reset_signals(&self) -> io::Result<()> {
        self.record(Call::ResetSignals)
    }
    fn file_kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        Ok(self
            .files
            .lock()
            .expect("recording lock")
            .get(path)
            .copied())
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(Call::MkdirAll(path.to_path_buf(), mode))?;
        self.add_with_parents(path, FileKind::Directory);
        Ok(())
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.record(Call::CreateFile(path.to_path_buf()))?;
        self.add_with_parents(path, FileKind::File);
        Ok(())
    }
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> io::Result<()> {
        self.record(Call::Mknod(path.to_path_buf(), kind, perm.bits(), dev))?;
        self.add_with_parents(path, FileKind::Other);
        Ok(())
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink(target.to_path_buf(), link.to_path_buf()))?;
        self.add_with_parents(link, FileKind::Symlink);
        Ok(())
    }
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        self.record(Call::Chown(path.to_path_buf(), uid, gid))
    }
    fn fchown(&self, fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
        self.record(Call::Fchown(fd, uid, gid))
    }
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.record(Call::WriteFile(path.to_path_buf(), data.to_vec()))
    }
    fn is_executable(&self, path: &Path) -> bool {
        self.files.lock().expect("recording lock").get(path) == Some(&FileKind::File)
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.to_string()))
    }
    fn setdomainname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Setdomainname(name.to_string()))
    }
    fn setrlimit(&self, resource: i32, soft: u64, hard: u64) -> io::Result<()> {
        self.record(Call::Setrlimit(resource, soft, hard))
    }
    fn set_capabilities(&self, set: CapSet, caps: &CapsHashSet) -> io::Result<()> {
        let name = match set {
            CapSet::Ambient => "ambient",
            CapSet::Bounding => "bounding",
            CapSet::Effective => "effective",
            CapSet::Inheritable => "inheritable",
            CapSet::Permitted => "permitted",
        };
        self.record(Call::SetCapabilities(name, caps.clone()))
    }
    fn set_keep_caps(&self, keep: bool) -> io::Result<()> {
        self.record(Call::SetKeepCaps(keep))
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record(Call::SetNoNewPrivs)
    }
    fn setgroups(&self, gids: &[u32]) -> io::Result<()> {
        self.record(Call::Setgroups(gids.to_vec()))
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.record(Call::Setresgid(gid))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.record(Call::Setresuid(uid))
    }
    fn umask(&self, mask: u32) {
        let _ = self.record(Call::Umask(mask));
    }
    fn setsid(&self) -> io::Result<()> {
        self.record(Call::Setsid)
    }
    /// Two descriptors of /dev/null stand in for the pty's ends.
    fn open_pty(&self, rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
        self.record(Call::OpenPty(rows, cols))?;
        let null = || std::fs::File::open("/dev/null").map(OwnedFd::from);
        Ok((null()?, null()?))
    }
    fn set_controlling_terminal(&self, fd: RawFd) -> io::Result<()> {
        self.record(Call::SetControllingTerminal(fd))
    }
    fn dup2(&self, old: RawFd, new: RawFd) -> io::Result<()> {
        self.record(Call::Dup2(old, new))
    }
    fn cloexec_from(&self, first: RawFd) -> io::Result<()> {
        self.record(Call::CloexecFrom(first))
    }
    fn load_seccomp(&self, _filter: &libseccomp::ScmpFilterContext) -> io::Result<()> {
        self.record(Call::LoadSeccomp)
    }
    fn execve(&self, path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
        match self.record(Call::Execve(path.to_owned(), args.to_vec(), env.to_vec())) {
            Err(e) => e,
            Ok(()) => io::Error::other("recorded execve"),
        }
    }
    fn pidfd_open(&self, pid: i32) -> io::Result<OwnedFd> {
        self.record(Call::PidfdOpen(pid))?;
        // Any real fd will do as a stand-in.
        std::fs::File::open("/dev/null").map(OwnedFd::from)
    }
    fn pidfd_send_signal(&self, _pidfd: RawFd, signal: i32) -> io::Result<()> {
        self.record(Call::PidfdSendSignal(signal))
    }
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        self.record(Call::Kill(pid, signal))
    }
}
