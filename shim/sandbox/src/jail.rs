//! The VMM's jail: the VMM starts, and stays, in a root of its own that holds only what it needs.
//!
//! The root is a directory of the sandbox (`<state>/vm`): the files the VMM writes or serves
//! (the vsock and virtiofsd sockets, the console, the disks, its configuration) live in it, and
//! what it only reads (its binary and libraries, the guest kernel, the guest image) is bound
//! into it read-only. The process enters it between fork and exec ([`enter`]), already in new
//! mount, PID, IPC, UTS and network namespaces (the caller's `unshare`): the binds are made in
//! the new mount namespace only (the host never sees them and they go with the VMM), the root is
//! pivoted to and the old one detached, every capability is dropped from the bounding set, the
//! process takes an unprivileged uid and gid of the sandbox's own with no supplementary groups,
//! and `no_new_privs` is set. `/dev/kvm` and the tap come as inherited descriptors. The network
//! namespace is empty: the tap descriptor reaches the pod's interface from anywhere.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// How many uids (and gids) the jails of a host spread over: a sandbox's is
/// `jail_id_base + hash % JAIL_ID_COUNT`.
pub const JAIL_ID_COUNT: u32 = 65_536;
/// The first jail uid/gid: above the ranges `/etc/subuid` and systemd hand out to users and
/// containers by default (up to 0x6FFFFFFF).
pub const DEFAULT_JAIL_ID_BASE: u32 = 0x7000_0000;
/// The highest `jail_id_base`: every id of the range stays below `u32::MAX`, which
/// `setresuid` reads as "unchanged".
pub const MAX_JAIL_ID_BASE: u32 = u32::MAX - JAIL_ID_COUNT - 1;
/// Where a dynamically linked executable's libraries are bound in the jail
/// (`LD_LIBRARY_PATH`).
pub const LIBRARY_DIR: &str = "/lib";
/// Where the host's dynamic loader finds libraries, in its order.
const HOST_LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: not an ELF executable", path.display())]
    Elf {
        path: PathBuf,
        source: goblin::error::Error,
    },
    #[error("{} needs the library {name}, found in none of {}", binary.display(), HOST_LIBRARY_DIRS.join(", "))]
    MissingLibrary { binary: PathBuf, name: String },
    #[error(
        "the jailed VMM (uid {uid}) cannot read the {what} {} (mode {mode:o}, owner {owner}): \
         make it readable by others, or set `jail = false` (debugging only)",
        path.display()
    )]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        uid: u32,
        mode: u32,
        owner: u32,
    },
    #[error("{} cannot go into a jail: it is not a plain file name", .0)]
    BadTarget(String),
}

/// The unprivileged uid and gid a jail runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

impl Ids {
    /// A sandbox's ids from its stable `name` (the host cgroup's name): distinct sandboxes get
    /// distinct ids but for hash collisions, which are harmless (each jail sees only its own
    /// root and processes).
    pub fn for_sandbox(name: &str, base: u32) -> Ids {
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let offset = u32::try_from(hash % u64::from(JAIL_ID_COUNT)).unwrap_or(0);
        let id = base.clamp(1, MAX_JAIL_ID_BASE) + offset;
        Ids { uid: id, gid: id }
    }
}

/// A host file made visible in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    source: PathBuf,
    /// Relative to the jail's root.
    target: PathBuf,
    read_only: bool,
}

/// An executable as the jail runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// Its path inside the jail.
    pub path: PathBuf,
    /// `LD_LIBRARY_PATH` it needs there (`None` for a static executable).
    pub library_path: Option<&'static str>,
}

/// A jail being assembled: its root on the host, its ids, and what is bound into it.
#[derive(Debug, Clone)]
pub struct Jail {
    root: PathBuf,
    ids: Ids,
    binds: Vec<Bind>,
}

impl Jail {
    pub fn new(root: &Path, ids: Ids) -> Jail {
        Jail {
            root: root.to_path_buf(),
            ids,
            binds: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ids(&self) -> Ids {
        self.ids
    }

    /// Binds the host file `source` read-only as `/name` in the jail and returns that path.
    /// Refused when the jail's uid could not read it (a bind does not change a file's mode).
    pub fn bind_read_only(
        &mut self,
        what: &'static str,
        source: &Path,
        name: &str,
    ) -> Result<PathBuf, JailError> {
        let target = plain_name(name)?;
        self.check_readable(what, source)?;
        Ok(self.add(source, target, true))
    }

    /// Binds `binary` as `/name` and, when it is dynamically linked, its loader (at the path
    /// it asks for) and the libraries it needs, transitively (under [`LIBRARY_DIR`]).
    pub fn bind_executable(&mut self, binary: &Path, name: &str) -> Result<Executable, JailError> {
        let target = plain_name(name)?;
        self.check_readable("executable", binary)?;
        let linking = read_linking(binary)?;
        let path = self.add(binary, target, true);
        let Some(interpreter) = linking.interpreter else {
            return Ok(Executable {
                path,
                library_path: None,
            });
        };
        let interpreter_target = relative(Path::new(&interpreter))?;
        self.check_readable("dynamic loader", Path::new(&interpreter))?;
        self.add(Path::new(&interpreter), interpreter_target, true);
        let mut pending = linking.needed;
        let mut bound: Vec<String> = Vec::new();
        while let Some(name) = pending.pop() {
            if bound.contains(&name) {
                continue;
            }
            let source = find_library(&name).ok_or_else(|| JailError::MissingLibrary {
                binary: binary.to_path_buf(),
                name: name.clone(),
            })?;
            self.check_readable("library", &source)?;
            let target = relative(&Path::new(LIBRARY_DIR).join(plain_name(&name)?))?;
            // The loader is bound at its own path already; its own NEEDED list is empty.
            if source != Path::new(&interpreter) {
                pending.extend(read_linking(&source)?.needed);
                self.add(&source, target, true);
            }
            bound.push(name);
        }
        Ok(Executable {
            path,
            library_path: Some(LIBRARY_DIR),
        })
    }

    /// The path inside the jail of `host`, a path under the root.
    pub fn inside(&self, host: &Path) -> Option<PathBuf> {
        let rest = host.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rest))
    }

    fn add(&mut self, source: &Path, target: PathBuf, read_only: bool) -> PathBuf {
        let inside = Path::new("/").join(&target);
        self.binds.retain(|b| b.target != target);
        self.binds.push(Bind {
            source: source.to_path_buf(),
            target,
            read_only,
        });
        inside
    }

    fn check_readable(&self, what: &'static str, path: &Path) -> Result<(), JailError> {
        let meta = fs::metadata(path).map_err(|source| JailError::Io {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.mode();
        let readable = mode & 0o004 != 0
            || (meta.uid() == self.ids.uid && mode & 0o400 != 0)
            || (meta.gid() == self.ids.gid && mode & 0o040 != 0);
        if readable {
            Ok(())
        } else {
            Err(JailError::Unreadable {
                what,
                path: path.to_path_buf(),
                uid: self.ids.uid,
                mode: mode & 0o7777,
                owner: meta.uid(),
            })
        }
    }

    /// Makes the root (owned by the jail's uid, mode 0700) and an empty mount point for every
    /// bind, and gives the files the VMM writes in the root to the jail's uid. What
    /// [`enter`] needs is returned, made ready before any fork.
    pub fn prepare(&self, owned: &[&Path]) -> Result<PreparedJail, JailError> {
        let io_error = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| JailError::Io { what, path, source }
        };
        match fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating the jail", &self.root)(e)),
        }
        chown(&self.root, self.ids).map_err(io_error("giving the jail its owner", &self.root))?;
        for path in owned {
            chown(path, self.ids).map_err(io_error("giving the jailed VMM", path))?;
        }
        let mut binds = Vec::with_capacity(self.binds.len());
        for bind in &self.binds {
            let target = self.root.join(&bind.target);
            if let Some(parent) = target.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(io_error("creating a directory in the jail", parent))?;
            }
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&target)
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("creating a mount point in the jail", &target)(e)),
            }
            binds.push(PreparedBind {
                source: c_path(&bind.source)?,
                target: c_path(&target)?,
                read_only: bind.read_only,
            });
        }
        Ok(PreparedJail {
            root: c_path(&self.root)?,
            binds,
            ids: self.ids,
        })
    }
}

fn chown(path: &Path, ids: Ids) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
}

/// `name` as a one-component relative path.
fn plain_name(name: &str) -> Result<PathBuf, JailError> {
    let path = Path::new(name);
    match path.components().collect::<Vec<_>>().as_slice() {
        [Component::Normal(_)] => Ok(path.to_path_buf()),
        _ => Err(JailError::BadTarget(name.to_string())),
    }
}

/// An absolute path without `..` as a path relative to the jail's root.
fn relative(path: &Path) -> Result<PathBuf, JailError> {
    let bad = || JailError::BadTarget(path.display().to_string());
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn c_path(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| JailError::BadTarget(path.display().to_string()))
}

/// What an ELF file asks of the dynamic loader.
#[derive(Debug, Default, PartialEq, Eq)]
struct Linking {
    interpreter: Option<String>,
    needed: Vec<String>,
}

fn read_linking(path: &Path) -> Result<Linking, JailError> {
    let bytes = fs::read(path).map_err(|source| JailError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|source| JailError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Linking {
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|l| l.to_string()).collect(),
    })
}

/// The library file `name` (a NEEDED entry) in the host loader's directories.
fn find_library(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    HOST_LIBRARY_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

#[derive(Debug)]
struct PreparedBind {
    source: CString,
    /// Absolute on the host: under the root.
    target: CString,
    read_only: bool,
}

/// A jail ready to be entered between fork and exec: every path made before the fork.
#[derive(Debug)]
pub struct PreparedJail {
    root: CString,
    binds: Vec<PreparedBind>,
    ids: Ids,
}

/// How the child's stderr names a step of [`enter`] that failed: `rust-vm jail: cannot STEP`.
pub const FAILED_STEP_PREFIX: &str = "rust-vm jail: ";

/// Writes `step` to stderr (the VMM's log) when it fails, so a refused jail names its step.
fn failed(step: &'static [u8]) -> io::Error {
    let error = io::Error::last_os_error();
    // SAFETY: write is async-signal-safe; the buffers are static.
    unsafe {
        let prefix = b"rust-vm jail: cannot ";
        libc::write(2, prefix.as_ptr().cast(), prefix.len());
        libc::write(2, step.as_ptr().cast(), step.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
    }
    error
}

/// Which half of [`bind_mount`] failed (errno tells why).
enum BindStep {
    Bind,
    Remount,
}

/// Binds `source` on `target`, then remounts the bind with `flags` (a bind takes no flags of its
/// own).
///
/// # Safety
/// Between fork and exec: only async-signal-safe calls.
unsafe fn bind_mount(
    source: &CString,
    target: &CString,
    flags: libc::c_ulong,
) -> Result<(), BindStep> {
    let null = std::ptr::null::<libc::c_char>();
    if libc::mount(
        source.as_ptr(),
        target.as_ptr(),
        null,
        libc::MS_BIND,
        std::ptr::null(),
    ) != 0
    {
        return Err(BindStep::Bind);
    }
    if libc::mount(
        null,
        target.as_ptr(),
        null,
        libc::MS_BIND | libc::MS_REMOUNT | flags,
        std::ptr::null(),
    ) != 0
    {
        return Err(BindStep::Remount);
    }
    Ok(())
}

/// Enters `jail`: in a process whose mount namespace is its own, between fork and exec.
/// Only async-signal-safe calls; nothing is allocated.
///
/// # Safety
/// Call it only in a child between fork and exec, after `unshare(CLONE_NEWNS | ...)`.
pub unsafe fn enter(jail: &PreparedJail) -> io::Result<()> {
    let null = std::ptr::null::<libc::c_char>();
    // Nothing of ours propagates back to the host.
    if libc::mount(
        null,
        c"/".as_ptr(),
        null,
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        return Err(failed(b"make the mounts private"));
    }
    let hardened = libc::MS_NOSUID | libc::MS_NODEV;
    // pivot_root needs the new root to be a mount point.
    bind_mount(&jail.root, &jail.root, hardened).map_err(|step| {
        failed(match step {
            BindStep::Bind => b"bind the jail's root",
            BindStep::Remount => b"remount the jail's root nosuid,nodev",
        })
    })?;
    for bind in &jail.binds {
        let read_only = if bind.read_only { libc::MS_RDONLY } else { 0 };
        bind_mount(&bind.source, &bind.target, hardened | read_only).map_err(|step| {
            failed(match step {
                BindStep::Bind => b"bind a file into the jail",
                BindStep::Remount => b"remount a file in the jail read-only",
            })
        })?;
    }
    if libc::chdir(jail.root.as_ptr()) != 0 {
        return Err(failed(b"enter the jail's root"));
    }
    // The old root is stacked under the new one at "." and detached right away.
    let dot = c".".as_ptr();
    if libc::syscall(libc::SYS_pivot_root, dot, dot) != 0 {
        return Err(failed(b"pivot_root into the jail"));
    }
    if libc::umount2(dot, libc::MNT_DETACH) != 0 {
        return Err(failed(b"detach the host's root"));
    }
    if libc::chdir(c"/".as_ptr()) != 0 {
        return Err(failed(b"chdir to /"));
    }
    // Every capability out of the bounding set (EINVAL past the kernel's last one).
    for cap in 0..64 {
        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
            && *libc::__errno_location() != libc::EINVAL
        {
            return Err(failed(b"drop a capability from the bounding set"));
        }
    }
    if libc::setgroups(0, std::ptr::null()) != 0 {
        return Err(failed(b"drop the supplementary groups"));
    }
    let Ids { uid, gid } = jail.ids;
    if uid == 0 || gid == 0 || uid == u32::MAX || gid == u32::MAX {
        *libc::__errno_location() = libc::EINVAL;
        return Err(failed(b"run as uid or gid 0 or -1"));
    }
    if libc::setresgid(gid, gid, gid) != 0 {
        return Err(failed(b"take the jail's gid"));
    }
    // From uid 0 to all-non-zero ids: the kernel clears the permitted, effective and ambient
    // capabilities.
    if libc::setresuid(uid, uid, uid) != 0 {
        return Err(failed(b"take the jail's uid"));
    }
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(failed(b"set no_new_privs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
