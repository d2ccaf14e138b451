//! Building the container's filesystem view inside its new mount namespace: spec mounts,
//! /dev, pivot_root, then masked and read-only paths.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};

use mount_options::{parse_options, propagation_flags};

use super::mounts::resolve_in_root;
use super::step::{Context, StepError};
use super::syscalls::{FileKind, MountPoint, MountPointKind, Syscalls};

/// Flags a remount must keep because an unprivileged user namespace cannot clear them.
const LOCKED: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

struct DefaultDevice {
    path: &'static str,
    major: u64,
    minor: u64,
}

const DEFAULT_DEVICES: &[DefaultDevice] = &[
    DefaultDevice {
        path: "/dev/null",
        major: 1,
        minor: 3,
    },
    DefaultDevice {
        path: "/dev/zero",
        major: 1,
        minor: 5,
    },
    DefaultDevice {
        path: "/dev/full",
        major: 1,
        minor: 7,
    },
    DefaultDevice {
        path: "/dev/random",
        major: 1,
        minor: 8,
    },
    DefaultDevice {
        path: "/dev/urandom",
        major: 1,
        minor: 9,
    },
    DefaultDevice {
        path: "/dev/tty",
        major: 5,
        minor: 0,
    },
];

const DEFAULT_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// A device node to create: path, kind, major, minor, mode, uid, gid.
type Node = (PathBuf, SFlag, u64, u64, u32, Option<u32>, Option<u32>);

pub struct RootfsSetup<'a> {
    pub sys: &'a dyn Syscalls,
    pub spec: &'a Spec,
    /// The rootfs directory as the agent sees it.
    pub rootfs: &'a Path,
    /// In a new user namespace: devices are bind-mounted from the agent's /dev, not created.
    pub in_user_ns: bool,
    /// The container's own cgroup directory as the agent sees it, when it has one and no cgroup
    /// namespace of its own: a `cgroup` mount binds it (as runc does), so the container sees its
    /// own limits and usage at the mount rather than the agent's whole hierarchy. `None`: such
    /// a mount is a fresh cgroup2 mount (rooted at the namespace's cgroup in a cgroup namespace).
    pub own_cgroup: Option<&'a Path>,
}

impl RootfsSetup<'_> {
    fn in_root(&self, path: &Path) -> Result<PathBuf, StepError> {
        resolve_in_root(self.rootfs, path).ctx(|| format!("resolving {}", path.display()))
    }

    /// Everything up to (not including) pivot_root.
    pub fn prepare(&self) -> Result<(), StepError> {
        let sys = self.sys;
        let linux = self.spec.linux().as_ref();
        let propagation = linux
            .and_then(|l| l.rootfs_propagation().as_deref())
            .and_then(propagation_flags)
            .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
        // Nothing done below may propagate back to the agent's namespace.
        sys.mount(None, Path::new("/"), None, propagation, None)
            .ctx(|| "setting the propagation of /".to_string())?;
        // pivot_root needs the new root to be a mount point.
        sys.mount(
            Some(self.rootfs),
            self.rootfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .ctx(|| format!("bind-mounting the rootfs {}", self.rootfs.display()))?;

        let mounts = self.spec.mounts().as_deref().unwrap_or_default();
        let dev_mounted = mounts.iter().any(|m| m.destination() == Path::new("/dev"));
        if !dev_mounted {
            // Keeps the nodes below out of the rootfs directory itself.
            let dev = sys
                .mount_point(self.rootfs, Path::new("/dev"), MountPointKind::Directory)
                .ctx(|| "creating /dev".to_string())?;
            sys.mount(
                Some(Path::new("tmpfs")),
                &dev.target(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            )
            .ctx(|| format!("mounting tmpfs on {}", dev.path.display()))?;
        }
        for (i, m) in mounts.iter().enumerate() {
            self.mount_one(i, m)?;
        }
        self.create_devices()?;
        Ok(())
    }

    fn mount_one(&self, index: usize, m: &Mount) -> Result<(), StepError> {
        let sys = self.sys;
        let what = || format!("mounts[{index}] ({})", m.destination().display());
        let opts = parse_options(m.options().as_deref().unwrap_or_default())
            .map_err(|reason| StepError::new(what(), io::Error::other(reason)))?;
        let typ = m.typ().as_deref();
        // Mounted on through its descriptor: a swap of a path component after this cannot
        // move the mount (see `Syscalls::mount_point`).
        let point = |kind| {
            sys.mount_point(self.rootfs, m.destination(), kind)
                .ctx(|| format!("{}: creating the mount point", what()))
        };
        // Once mounted, the descriptor still names what was covered: what comes after the
        // mount goes to the new mount's root, opened afresh.
        let mounted = || {
            sys.mount_point(self.rootfs, m.destination(), MountPointKind::Existing)
                .ctx(|| format!("{}: opening the new mount", what()))
        };
        let is_cgroup = matches!(typ, Some("cgroup") | Some("cgroup2"));
        let bind_source = match self.own_cgroup {
            Some(dir) if is_cgroup => Some(dir),
            _ if opts.is_bind() || typ == Some("bind") => {
                Some(m.source().as_deref().unwrap_or(Path::new("")))
            }
            _ => None,
        };
        if let Some(source) = bind_source {
            let kind = sys
                .file_kind(source)
                .ctx(|| format!("{}: inspecting source {}", what(), source.display()))?
                .ok_or_else(|| {
                    StepError::new(
                        format!("{}: source {}", what(), source.display()),
                        io::Error::from_raw_os_error(libc::ENOENT),
                    )
                })?;
            let dest = point(if kind == FileKind::Directory {
                MountPointKind::Directory
            } else {
                MountPointKind::File
            })?;
            let bind = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
            sys.mount(Some(source), &dest.target(), None, bind, None)
                .ctx(|| format!("{}: bind-mounting {}", what(), source.display()))?;
            let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                let dest = mounted()?;
                let locked = sys
                    .mount_flags(&dest.target())
                    .ctx(|| format!("{}: statvfs", what()))?
                    & LOCKED;
                sys.mount(
                    None,
                    &dest.target(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked,
                    None,
                )
                .ctx(|| format!("{}: applying {:?}", what(), m.options()))?;
            }
        } else {
            let fstype = match typ {
                // Containers see the unified hierarchy only.
                _ if is_cgroup => "cgroup2",
                Some(t) => t,
                None => "none",
            };
            let dest = point(MountPointKind::Directory)?;
            let source = m.source().clone().unwrap_or_else(|| PathBuf::from(fstype));
            let data = opts.data_string();
            sys.mount(
                Some(&source),
                &dest.target(),
                Some(fstype),
                opts.flags,
                data.as_deref(),
            )
            .ctx(|| format!("{}: mounting {fstype}", what()))?;
        }
        if !opts.propagation.is_empty() {
            sys.mount(None, &mounted()?.target(), None, opts.propagation, None)
                .ctx(|| format!("{}: setting propagation", what()))?;
        }
        Ok(())
    }

    fn create_devices(&self) -> Result<(), StepError> {
        let sys = self.sys;
        let spec_devices = self
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        let mut nodes: Vec<Node> = Vec::new();
        for d in DEFAULT_DEVICES {
            if !spec_devices.iter().any(|s| s.path() == Path::new(d.path)) {
                nodes.push((
                    d.path.into(),
                    SFlag::S_IFCHR,
                    d.major,
                    d.minor,
                    0o666,
                    None,
                    None,
                ));
            }
        }
        for d in spec_devices {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => continue,
            };
            nodes.push((
                d.path().clone(),
                kind,
                d.major() as u64,
                d.minor() as u64,
                d.file_mode().unwrap_or(0o666),
                d.uid(),
                d.gid(),
            ));
        }
        for (path, kind, major, minor, mode, uid, gid) in nodes {
            let dest = self.in_root(&path)?;
            if self.in_user_ns {
                let point = sys
                    .mount_point(self.rootfs, &path, MountPointKind::File)
                    .ctx(|| format!("creating {}", dest.display()))?;
                sys.mount(Some(&path), &point.target(), None, MsFlags::MS_BIND, None)
                    .ctx(|| format!("bind-mounting device {}", path.display()))?;
                continue;
            }
            if let Some(parent) = dest.parent() {
                sys.mkdir_all(parent, 0o755)
                    .ctx(|| format!("creating {}", parent.display()))?;
            }
            if sys
                .file_kind(&dest)
                .ctx(|| format!("inspecting {}", dest.display()))?
                .is_some()
            {
                continue;
            }
            sys.mknod(
                &dest,
                kind,
                Mode::from_bits_truncate(mode & 0o7777),
                makedev(major, minor),
            )
            .ctx(|| format!("creating device {}", path.display()))?;
            if uid.is_some() || gid.is_some() {
                sys.chown(&dest, uid, gid)
                    .ctx(|| format!("chown {}", path.display()))?;
            }
        }
        for (target, link) in DEFAULT_LINKS {
            let dest = self.in_root(Path::new(link))?;
            if sys
                .file_kind(&dest)
                .ctx(|| format!("inspecting {link}"))?
                .is_none()
            {
                sys.symlink(Path::new(target), &dest)
                    .ctx(|| format!("linking {link}"))?;
            }
        }
        let ptmx = self.in_root(Path::new("/dev/ptmx"))?;
        let pts = self.in_root(Path::new("/dev/pts"))?;
        if sys
            .file_kind(&ptmx)
            .ctx(|| "inspecting /dev/ptmx".to_string())?
            .is_none()
            && sys
                .file_kind(&pts)
                .ctx(|| "inspecting /dev/pts".to_string())?
                .is_some()
        {
            sys.symlink(Path::new("pts/ptmx"), &ptmx)
                .ctx(|| "linking /dev/ptmx".to_string())?;
        }
        Ok(())
    }

    /// Makes the rootfs `/` and drops the agent's view (pivot_root(".", ".") then detaching
    /// the old root, so no directory is needed for it).
    pub fn pivot(&self) -> Result<(), StepError> {
        let sys = self.sys;
        sys.chdir(self.rootfs)
            .ctx(|| format!("chdir {}", self.rootfs.display()))?;
        // EINVAL here when the caller's root is the kernel's rootfs (an initramfs): its init
        // must first move its root onto a mount of its own, as the guest agent does.
        sys.pivot_root(Path::new("."), Path::new("."))
            .ctx(|| format!("pivot_root into {}", self.rootfs.display()))?;
        // The old root must not pass our unmount on to the agent's namespace.
        sys.mount(
            None,
            Path::new("."),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        )
        .ctx(|| "making the old root a slave".to_string())?;
        sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
            .ctx(|| "detaching the old root".to_string())?;
        sys.chdir(Path::new("/")).ctx(|| "chdir /".to_string())
    }

    /// A path of the container's (after pivot_root) held open, `None` when nothing is there.
    fn existing(&self, p: &str) -> Result<Option<MountPoint>, StepError> {
        match self
            .sys
            .mount_point(Path::new("/"), Path::new(p), MountPointKind::Existing)
        {
            Ok(point) => Ok(Some(point)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(StepError::new(format!("opening {p}"), e)),
        }
    }

    /// After pivot_root: sysctls (before `/proc/sys` goes read-only, as runc orders them),
    /// read-only and masked paths, the working directory when missing, a read-only root.
    pub fn finalize(&self) -> Result<(), StepError> {
        let sys = self.sys;
        let linux = self.spec.linux().as_ref();
        for (key, value) in linux
            .and_then(|l| l.sysctl().as_ref())
            .into_iter()
            .flatten()
        {
            let file = Path::new("/proc/sys").join(key.replace('.', "/"));
            sys.write_file(&file, value.as_bytes())
                .ctx(|| format!("linux.sysctl.{key}"))?;
        }
        for p in linux
            .and_then(|l| l.readonly_paths().as_deref())
            .unwrap_or_default()
        {
            let Some(point) = self.existing(p)? else {
                continue;
            };
            let target = point.target();
            sys.mount(
                Some(&target),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .ctx(|| format!("readonlyPaths: binding {p}"))?;
            // The new bind's root, not what it covers.
            let Some(bound) = self.existing(p)? else {
                continue;
            };
            let target = bound.target();
            let locked = sys.mount_flags(&target).ctx(|| format!("statvfs {p}"))? & LOCKED;
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_REC
                    | locked,
                None,
            )
            .ctx(|| format!("readonlyPaths: remounting {p} read-only"))?;
        }
        for p in linux
            .and_then(|l| l.masked_paths().as_deref())
            .unwrap_or_default()
        {
            let path = Path::new(p);
            let kind = sys.file_kind(path).ctx(|| format!("inspecting {p}"))?;
            let Some(point) = kind.map(|_| self.existing(p)).transpose()?.flatten() else {
                continue;
            };
            match kind {
                Some(FileKind::Directory) => sys.mount(
                    Some(Path::new("tmpfs")),
                    &point.target(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                ),
                _ => sys.mount(
                    Some(Path::new("/dev/null")),
                    &point.target(),
                    None,
                    MsFlags::MS_BIND,
                    None,
                ),
            }
            .ctx(|| format!("maskedPaths: masking {p}"))?;
        }
        // The working directory, made (with its parents, 0755, as root) when missing, as runc
        // does: the kubelet's `workingDir` need not exist in the image. Inside the new root a
        // symlink cannot lead out of it.
        if let Some(cwd) = self
            .spec
            .process()
            .as_ref()
            .map(|p| p.cwd())
            .filter(|c| *c != Path::new("/"))
        {
            sys.mkdir_all(cwd, 0o755)
                .ctx(|| format!("process.cwd {}: creating it", cwd.display()))?;
        }
        if self.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
            let root = Path::new("/");
            let locked = sys.mount_flags(root).ctx(|| "statvfs /".to_string())? & LOCKED;
            sys.mount(
                None,
                root,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
                None,
            )
            .ctx(|| "root.readonly: remounting / read-only".to_string())?;
        }
        Ok(())
    }
}
