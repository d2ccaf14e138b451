//! Opening a mount destination inside a container's root without leaving it, and without a
//! window between resolving it and mounting on it (the CVE-2021-30465 class: a container that
//! shares a directory with another one swaps a path component for a symlink between the two).
//!
//! Existing components are resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`: symlinks are
//! followed as if the root were `/`, and `..` stops there. Missing ones are created one at a
//! time relative to the descriptor of their parent and opened with `O_NOFOLLOW`, so nothing is
//! ever created or opened through a path string that could be redirected. The caller mounts on
//! the descriptor ([`super::MountPoint::target`]).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use super::MountPointKind;
use crate::error::errno_io;

/// As many symlinks as the kernel follows in one lookup.
const MAX_SYMLINKS: usize = 40;

/// Opens (creating what is missing, as `kind` says) `path` inside the directory `root`, as an
/// `O_PATH` descriptor. `path` is a container path: absolute or not, it starts at `root`.
pub(super) fn open_mount_point(
    root: &Path,
    path: &Path,
    kind: MountPointKind,
) -> io::Result<OwnedFd> {
    let root_fd = openat(
        nix::fcntl::AT_FDCWD,
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_io)?;
    let mut pending = relative(path);
    let mut followed = 0;
    'resolve: loop {
        match open_in_root(&root_fd, &pending) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if kind != MountPointKind::Existing => {}
            Err(e) => return Err(errno_io(e)),
        }
        let parts: Vec<&OsStr> = pending.iter().collect();
        // The longest prefix that exists; `root` itself always does.
        let (mut at, mut fd) = (parts.len(), None);
        while at > 0 {
            at -= 1;
            match open_in_root(&root_fd, &join(&parts[..at])) {
                Ok(found) => {
                    fd = Some(found);
                    break;
                }
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(errno_io(e)),
            }
        }
        let mut dir = match fd {
            Some(fd) => fd,
            None => open_in_root(&root_fd, Path::new("")).map_err(errno_io)?,
        };
        for (i, name) in parts.iter().enumerate().skip(at) {
            if *name == OsStr::new("..") {
                // `..` of a directory this call has to create: nothing sensible to make.
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let last = i + 1 == parts.len();
            let as_file = last && kind == MountPointKind::File;
            let made = if as_file {
                openat(
                    &dir,
                    *name,
                    OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                )
                .map(drop)
            } else {
                match mkdirat(&dir, *name, Mode::from_bits_truncate(0o755)) {
                    Err(Errno::EEXIST) => Ok(()),
                    other => other,
                }
            };
            let mut flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            if !as_file {
                flags |= OFlag::O_DIRECTORY;
            }
            let opened = made.and_then(|()| openat(&dir, *name, flags, Mode::empty()));
            match opened {
                Ok(next) => dir = next,
                // Something put a symlink here (or one was dangling): follow it in the root
                // and start over with what it names.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let Ok(target) = readlinkat(&dir, *name) else {
                        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                    };
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = Path::new(&target);
                    let base = if target.is_absolute() {
                        PathBuf::new()
                    } else {
                        join(&parts[..i])
                    };
                    pending = base.join(relative(target)).join(join(&parts[i + 1..]));
                    continue 'resolve;
                }
                Err(e) => return Err(errno_io(e)),
            }
        }
        return Ok(dir);
    }
}

/// `path` opened under `root` with every step resolved inside it (`""` is `root` itself).
fn open_in_root(root: &impl AsFd, path: &Path) -> nix::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, path, how)
}

/// `path` (a container path) under `root`, lexically: for messages, and the recording double.
pub(crate) fn in_root_path(root: &Path, path: &Path) -> PathBuf {
    root.join(relative(path))
}

/// The normal and `..` components of `path`, as a relative path.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect()
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::symlink;

    use super::*;

    /// Where an open descriptor points, as the kernel says.
    fn where_is(fd: &OwnedFd) -> PathBuf {
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("readlink")
    }

    #[test]
    fn symlinks_and_dotdot_stay_in_the_root_and_missing_parts_are_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        fs::create_dir_all(dir.path().join("outside")).expect("mkdir");
        symlink("/etc", root.join("abs")).expect("symlink");
        symlink("../../../outside", root.join("up")).expect("symlink");
        symlink("/missing/deeper", root.join("dangling")).expect("symlink");
        let open = |p: &str, kind| open_mount_point(&root, Path::new(p), kind);

        let fd = open("/abs/new/dir", MountPointKind::Directory).expect("abs");
        assert_eq!(where_is(&fd), root.join("etc/new/dir"));
        let fd = open("/up/x", MountPointKind::Directory).expect("up");
        assert_eq!(where_is(&fd), root.join("outside/x"));
        assert!(!dir.path().join("outside/x").exists(), "left the root");
        let fd = open("/../../etc/file", MountPointKind::File).expect("dotdot");
        assert_eq!(where_is(&fd), root.join("etc/file"));
        assert!(root.join("etc/file").is_file());
        let fd = open("dangling/leaf", MountPointKind::Directory).expect("dangling");
        assert_eq!(where_is(&fd), root.join("missing/deeper/leaf"));
        let err = open("/not/there", MountPointKind::Existing).expect_err("existing");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(!root.join("not").exists());
    }

    #[test]
    fn a_symlink_loop_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir_all(&root).expect("mkdir");
        symlink("b", root.join("a")).expect("symlink");
        symlink("a", root.join("b")).expect("symlink");
        let err = open_mount_point(&root, Path::new("/a/x"), MountPointKind::Directory)
            .expect_err("loop");
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
