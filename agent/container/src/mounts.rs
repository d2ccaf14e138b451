//! Mount paths: resolving a container path inside the rootfs without letting symlinks escape it.
//! (Option strings to mount(2) flags are the `rust-vm-mount-options` crate's, shared with the
//! containerd shim.)

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Resolves `path` (a container path) under `root` as the container would see it: symlinks
/// are followed but never leave `root`, `..` stops at `root`. Missing components are kept
/// as they are (they will be created).
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    const MAX_SYMLINKS: usize = 40;
    let mut pending: Vec<PathBuf> = components_of(path);
    pending.reverse();
    let mut resolved = PathBuf::new();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        if part.as_os_str() == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = components_of(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components_of(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from(OsStr::new(".."))),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let dir = std::env::temp_dir().join(format!("rust-vm-resolve-{}", std::process::id()));
        let root = dir.join("root");
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/../../etc", root.join("escape")).expect("symlink");
        std::os::unix::fs::symlink("../etc", root.join("etc/rel")).expect("symlink");
        let r = resolve_in_root(&root, Path::new("/escape/passwd")).expect("resolves");
        assert_eq!(r, root.join("etc/passwd"));
        let r = resolve_in_root(&root, Path::new("/../../x")).expect("resolves");
        assert_eq!(r, root.join("x"));
        let r = resolve_in_root(&root, Path::new("/etc/rel/y")).expect("resolves");
        assert_eq!(r, root.join("etc/y"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
