//! The container root filesystem as a virtio-blk disk: an ext4 image made from a bundle's rootfs
//! directory with `mkfs.ext4 -d` (e2fsprogs >= 1.43), which copies files, modes, owners, xattrs,
//! hard links and device nodes without mounting anything and without root.
//!
//! The image is a private, writable copy: the container may write to its root (as it would with
//! runc), the bundle stays untouched, and the file is deleted with the sandbox. The image is
//! sparse and has no journal (it never outlives a crash), so its cost is the copy of the content
//! (docs/running.md has the measured cost per MiB; `cargo bench -p rust-vm-sandbox --bench
//! rootfs_image` prints it).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BLOCK: u64 = 4096;
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("rootfs directory {0} does not exist")]
    MissingSource(PathBuf),
    #[error("rootfs {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("reading rootfs {path}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating image {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running {program} (install e2fsprogs >= 1.43)")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{program} failed for {image} ({status}): {stderr}")]
    Mkfs {
        program: PathBuf,
        image: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// How much room the container gets on top of its content.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Extra space as a percentage of the content.
    pub headroom_percent: u64,
    /// Extra space in MiB on top of the percentage.
    pub headroom_mib: u64,
    /// `mkfs.ext4`, looked up in `$PATH` when bare.
    pub mkfs: PathBuf,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            headroom_percent: 25,
            headroom_mib: 64,
            mkfs: PathBuf::from("mkfs.ext4"),
        }
    }
}

/// What a directory tree needs on ext4 with 4 KiB blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    /// Data blocks, in bytes (files rounded up to blocks, one block per directory).
    pub bytes: u64,
    /// Files, directories, links and nodes.
    pub inodes: u64,
}

#[derive(Debug, Clone)]
pub struct RootfsImage {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub content: TreeSize,
}

/// Measures `root` without following symbolic links.
pub fn measure_tree(root: &Path) -> Result<TreeSize, ImageError> {
    let meta = fs::symlink_metadata(root).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::MissingSource(root.to_path_buf())
        } else {
            ImageError::Walk {
                path: root.to_path_buf(),
                source,
            }
        }
    })?;
    if !meta.is_dir() {
        return Err(ImageError::NotADirectory(root.to_path_buf()));
    }
    let mut size = TreeSize::default();
    let mut seen_links = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        size.inodes += 1;
        size.bytes += BLOCK;
        let entries = fs::read_dir(&dir).map_err(|source| ImageError::Walk {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ImageError::Walk {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|source| ImageError::Walk {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                continue; // another name of a file already counted
            }
            size.inodes += 1;
            if meta.is_file() {
                size.bytes += meta.len().div_ceil(BLOCK) * BLOCK;
            } else if meta.file_type().is_symlink() && meta.len() >= 60 {
                // Targets shorter than 60 bytes live in the inode ("fast" symlinks).
                size.bytes += BLOCK;
            }
        }
    }
    Ok(size)
}

/// The image size for a tree: content, headroom, and ext4's own metadata (inode tables at 256
/// bytes per inode, group descriptors and bitmaps, ~2%), rounded up to a MiB.
pub fn image_size(content: TreeSize, opts: &ImageOptions) -> (u64, u64) {
    let inodes = (content.inodes + content.inodes / 2 + 1024).next_multiple_of(8);
    let data = content.bytes + content.bytes * opts.headroom_percent / 100;
    let metadata = inodes * 256 + data / 50 + 4 * MIB;
    let total = (data + metadata + opts.headroom_mib * MIB).next_multiple_of(MIB);
    (total, inodes)
}

/// Builds a sparse ext4 image of `source` at `image` (replacing nothing: `image` must not
/// exist). On failure nothing is left at `image`.
pub fn build_ext4_image(
    source: &Path,
    image: &Path,
    opts: &ImageOptions,
) -> Result<RootfsImage, ImageError> {
    let content = measure_tree(source)?;
    let (size_bytes, inodes) = image_size(content, opts);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(|source| ImageError::Create {
            path: image.to_path_buf(),
            source,
        })?;
    let result = file
        .set_len(size_bytes)
        .map_err(|source| ImageError::Create {
            path: image.to_path_buf(),
            source,
        })
        .and_then(|()| run_mkfs(source, image, inodes, opts));
    drop(file);
    if let Err(e) = result {
        let _ = fs::remove_file(image);
        return Err(e);
    }
    Ok(RootfsImage {
        path: image.to_path_buf(),
        size_bytes,
        content,
    })
}

/// Writes an ext4 filesystem of `source` over the existing file `image`, at the file's current
/// size (a pod disk slot: the file stays attached to the VM, so it keeps its size).
pub fn format_ext4_in_place(
    source: &Path,
    image: &Path,
    inodes: u64,
    opts: &ImageOptions,
) -> Result<(), ImageError> {
    run_mkfs(source, image, inodes, opts)
}

fn run_mkfs(
    source: &Path,
    image: &Path,
    inodes: u64,
    opts: &ImageOptions,
) -> Result<(), ImageError> {
    let output = Command::new(&opts.mkfs)
        .arg("-q")
        .arg("-F")
        .args([
            "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0", "-L", "rootfs",
        ])
        .args(["-O", "^has_journal"])
        .args(["-E", "lazy_itable_init=1,nodiscard"])
        .arg("-N")
        .arg(inodes.to_string())
        .arg("-d")
        .arg(source)
        .arg(image)
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .output()
        .map_err(|source| ImageError::Spawn {
            program: opts.mkfs.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(ImageError::Mkfs {
            program: opts.mkfs.clone(),
            image: image.to_path_buf(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("bin")).expect("mkdir");
        fs::write(dir.path().join("bin/a"), vec![1u8; 5000]).expect("write");
        fs::write(dir.path().join("small"), b"x").expect("write");
        std::os::unix::fs::symlink("a", dir.path().join("bin/short")).expect("symlink");
        fs::hard_link(dir.path().join("bin/a"), dir.path().join("bin/a2")).expect("link");
        dir
    }

    #[test]
    fn measures_blocks_inodes_and_hard_links_once() {
        let dir = tree();
        let size = measure_tree(dir.path()).expect("measure");
        // root + bin dirs, a (2 blocks, counted once for two names), small (1 block), symlink.
        assert_eq!(size.inodes, 5);
        assert_eq!(size.bytes, 2 * BLOCK + 2 * BLOCK + BLOCK);
    }

    #[test]
    fn size_has_headroom_and_is_mib_aligned() {
        let content = TreeSize {
            bytes: 100 * MIB,
            inodes: 1000,
        };
        let (size, inodes) = image_size(content, &ImageOptions::default());
        assert_eq!(size % MIB, 0);
        assert!(size >= 100 * MIB + 25 * MIB + 64 * MIB, "{size}");
        assert!(inodes >= 1000 + 1024);
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = build_ext4_image(
            &dir.path().join("nope"),
            &dir.path().join("img"),
            &ImageOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(!dir.path().join("img").exists());
    }

    #[test]
    fn builds_an_ext4_image_with_the_files() {
        let dir = tree();
        let out = tempfile::tempdir().expect("tempdir");
        let img = out.path().join("rootfs.ext4");
        let built = build_ext4_image(dir.path(), &img, &ImageOptions::default()).expect("build");
        assert_eq!(fs::metadata(&img).expect("stat").len(), built.size_bytes);
        // The ext4 superblock magic 0xEF53 sits at byte 1024 + 0x38.
        let bytes = fs::read(&img).expect("read");
        assert_eq!(&bytes[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
        let listing = Command::new("debugfs")
            .args(["-R", "ls -l /bin"])
            .arg(&img)
            .output()
            .expect("debugfs");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.contains(" a2"), "{text}");
        assert!(text.contains("5000"), "{text}");
    }

    #[test]
    fn existing_image_is_not_overwritten() {
        let dir = tree();
        let out = tempfile::tempdir().expect("tempdir");
        let img = out.path().join("rootfs.ext4");
        fs::write(&img, b"keep").expect("write");
        assert!(build_ext4_image(dir.path(), &img, &ImageOptions::default()).is_err());
        assert_eq!(fs::read(&img).expect("read"), b"keep");
    }

    #[test]
    fn mkfs_failure_leaves_nothing() {
        let dir = tree();
        let out = tempfile::tempdir().expect("tempdir");
        let img = out.path().join("rootfs.ext4");
        let opts = ImageOptions {
            mkfs: PathBuf::from("false"),
            ..ImageOptions::default()
        };
        let err = build_ext4_image(dir.path(), &img, &opts).unwrap_err();
        assert!(matches!(err, ImageError::Mkfs { .. }), "{err}");
        assert!(!img.exists());
    }
}
