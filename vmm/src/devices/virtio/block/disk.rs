//! The host side of a virtio-blk device: the backing file, its size and its serial.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{BlockDeviceConfig, BlockError};

pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;

pub struct DiskImage {
    file: File,
    path: PathBuf,
    /// Usable size in bytes: whole sectors only.
    size: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl DiskImage {
    pub fn open(config: &BlockDeviceConfig) -> Result<Self, BlockError> {
        let path = config.path.clone();
        let mut file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&path)
            .map_err(|source| BlockError::Open {
                path: path.clone(),
                source,
            })?;
        let file_type = file
            .metadata()
            .map_err(|source| BlockError::Size {
                path: path.clone(),
                source,
            })?
            .file_type();
        if !(file_type.is_file() || file_type.is_block_device()) {
            return Err(BlockError::NotADisk { path });
        }
        // Seeking to the end also works for host block devices, whose metadata length is 0.
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.clone(),
                source,
            })?;
        if !len.is_multiple_of(SECTOR_SIZE) {
            log::warn!(
                "block image {} is not a whole number of sectors; its last {} bytes are not visible",
                path.display(),
                len % SECTOR_SIZE
            );
        }
        let id = match &config.id {
            Some(id) => id_bytes(id)?,
            None => derived_id(&file, &path),
        };
        Ok(Self {
            file,
            path,
            size: len - len % SECTOR_SIZE,
            read_only: config.read_only,
            id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn id(&self) -> &[u8; ID_BYTES] {
        &self.id
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn id_bytes(id: &str) -> Result<[u8; ID_BYTES], BlockError> {
    let bytes = id.as_bytes();
    if bytes.len() > ID_BYTES {
        return Err(BlockError::IdTooLong { id: id.to_owned() });
    }
    let mut out = [0u8; ID_BYTES];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// A serial that stays the same for the same backing file across runs: its device and inode.
fn derived_id(file: &File, path: &Path) -> [u8; ID_BYTES] {
    let text = match file.metadata() {
        Ok(meta) => format!("rvm{:x}.{:x}", meta.dev(), meta.ino()),
        Err(e) => {
            log::warn!("cannot stat block image {}: {e}", path.display());
            String::from("rust-vm-disk")
        }
    };
    let mut out = [0u8; ID_BYTES];
    let len = text.len().min(ID_BYTES);
    out[..len].copy_from_slice(&text.as_bytes()[..len]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    fn config(path: &Path) -> BlockDeviceConfig {
        BlockDeviceConfig {
            path: path.to_owned(),
            read_only: false,
            id: None,
        }
    }

    #[test]
    fn size_counts_whole_sectors_only() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(3 * SECTOR_SIZE + 100).unwrap();
        let disk = DiskImage::open(&config(image.as_path())).unwrap();
        assert_eq!(disk.sectors(), 3);
        assert_eq!(disk.size(), 3 * SECTOR_SIZE);
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let err = DiskImage::open(&config(Path::new("/nonexistent/disk.img")))
            .err()
            .unwrap();
        assert!(matches!(err, BlockError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/disk.img"));
    }

    #[test]
    fn directories_are_not_disks() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let mut cfg = config(dir.as_path());
        cfg.read_only = true;
        assert!(matches!(
            DiskImage::open(&cfg),
            Err(BlockError::NotADisk { .. })
        ));
    }

    #[test]
    fn ids_are_padded_checked_and_derived() {
        let image = TempFile::new().unwrap();
        let mut cfg = config(image.as_path());
        cfg.id = Some("disk0".into());
        let disk = DiskImage::open(&cfg).unwrap();
        assert_eq!(&disk.id()[..6], b"disk0\0");

        cfg.id = Some("x".repeat(21));
        assert!(matches!(
            DiskImage::open(&cfg),
            Err(BlockError::IdTooLong { .. })
        ));

        cfg.id = None;
        let first = *DiskImage::open(&cfg).unwrap().id();
        assert!(first.starts_with(b"rvm"));
        assert_eq!(first, *DiskImage::open(&cfg).unwrap().id());
    }

    #[test]
    fn read_only_images_are_opened_without_write_access() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(SECTOR_SIZE).unwrap();
        let mut cfg = config(image.as_path());
        cfg.read_only = true;
        let disk = DiskImage::open(&cfg).unwrap();
        assert!(disk.read_only());
        assert!(disk.write_at(&[1], 0).is_err());
    }
}
