//! Pod disk slots: spare virtio-blk disks attached at boot, so containers that join a running
//! VM get a rootfs disk without hot-plug.
//!
//! Each slot is a sparse file in the state directory with a fixed size (the most a container's
//! rootfs may take), attached with the serial `rust-vm-slot-N`. When a container arrives, its
//! ext4 image is written into a free slot's file in place (the file keeps its size, so the
//! VMM's view of the disk never changes) and the agent mounts the matching guest device after
//! dropping its cached blocks. When the container is removed (the agent has unmounted it),
//! the file's blocks are released again and the slot is free for the next container.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::rootfs::{self, ImageError, ImageOptions};

/// The config key that sets how many slots a pod sandbox gets.
pub const SLOTS_KEY: &str = "pod_disk_slots";
/// The config key that sets each slot's size in MiB.
pub const SLOT_SIZE_KEY: &str = "pod_disk_max_mib";
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("all {count} pod disk slots are in use; raise `{SLOTS_KEY}` in /etc/rust-vm/config.toml (it takes effect for new pods)")]
    AllInUse { count: usize },
    #[error("rootfs {path} needs {needed_mib} MiB, more than a pod disk slot holds ({max_mib} MiB); raise `{SLOT_SIZE_KEY}` in /etc/rust-vm/config.toml")]
    TooLarge {
        path: PathBuf,
        needed_mib: u64,
        max_mib: u64,
    },
    #[error("pod disk slot {path}: {what}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("pod disk slot")]
    Image(#[from] ImageError),
}

/// One spare disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub index: usize,
    /// The backing file on the host.
    pub path: PathBuf,
    /// The virtio-blk serial (what `/sys/block/vdX/serial` shows in the guest).
    pub serial: String,
    /// The guest device, from attach order: the disks before the slots come first.
    pub guest_device: PathBuf,
    /// The rootfs directory whose image the slot holds now.
    owner: Option<PathBuf>,
}

/// The slots of one sandbox and who uses them.
#[derive(Debug)]
pub struct DiskSlots {
    slots: Vec<Slot>,
    size_bytes: u64,
    image: ImageOptions,
}

/// The name Linux's virtio-blk driver gives its `index`-th disk: vda..vdz, vdaa.. (the same
/// scheme as sd).
pub fn guest_disk_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index as i64;
    loop {
        suffix.push(b'a' + (n % 26) as u8);
        n = n / 26 - 1;
        if n < 0 {
            break;
        }
    }
    suffix.reverse();
    format!("vd{}", String::from_utf8_lossy(&suffix))
}

impl DiskSlots {
    /// `count` slots of `size_mib` each in `dir`; the guest sees them after `disks_before`
    /// other virtio-blk disks. Creates nothing yet (see [`DiskSlots::create_files`]).
    pub fn new(dir: &Path, count: usize, size_mib: u64, disks_before: usize) -> DiskSlots {
        let slots = (0..count)
            .map(|index| Slot {
                index,
                path: dir.join(format!("slot-{index}.img")),
                serial: format!("rust-vm-slot-{index}"),
                guest_device: PathBuf::from("/dev").join(guest_disk_name(disks_before + index)),
                owner: None,
            })
            .collect();
        DiskSlots {
            slots,
            size_bytes: size_mib * MIB,
            image: ImageOptions::default(),
        }
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Creates every backing file, sparse, at the slot size: no disk space is used until a
    /// container's image is written.
    pub fn create_files(&self) -> Result<(), SlotError> {
        for slot in &self.slots {
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(&slot.path)
                .map_err(|source| slot_io(slot, "creating", source))?;
            file.set_len(self.size_bytes)
                .map_err(|source| slot_io(slot, "sizing", source))?;
        }
        Ok(())
    }

    /// The slot that holds `rootfs_dir`'s image, if any.
    pub fn find(&self, rootfs_dir: &Path) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.owner.as_deref() == Some(rootfs_dir))
    }

    /// Takes a free slot for `rootfs_dir` (the lowest index, so names stay predictable).
    pub fn allocate(&mut self, rootfs_dir: &Path) -> Result<&Slot, SlotError> {
        let count = self.slots.len();
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.owner.is_none())
            .ok_or(SlotError::AllInUse { count })?;
        slot.owner = Some(rootfs_dir.to_path_buf());
        Ok(slot)
    }

    /// Takes a free slot and writes an ext4 image of `rootfs_dir` into it (the whole slot size,
    /// synced to the file before returning). On failure the slot stays free.
    pub fn fill(&mut self, rootfs_dir: &Path) -> Result<Slot, SlotError> {
        let content = rootfs::measure_tree(rootfs_dir)?;
        let (needed, inodes) = rootfs::image_size(content, &self.image);
        let needed_without_headroom = needed.saturating_sub(self.image.headroom_mib * MIB);
        if needed_without_headroom > self.size_bytes {
            return Err(SlotError::TooLarge {
                path: rootfs_dir.to_path_buf(),
                needed_mib: needed_without_headroom.div_ceil(MIB),
                max_mib: self.size_bytes / MIB,
            });
        }
        let slot = self.allocate(rootfs_dir)?.clone();
        let written = release_blocks(&slot, self.size_bytes)
            .and_then(|()| {
                rootfs::format_ext4_in_place(rootfs_dir, &slot.path, inodes, &self.image)
                    .map_err(SlotError::from)
            })
            .and_then(|()| sync(&slot));
        if let Err(e) = written {
            self.release(rootfs_dir).ok();
            return Err(e);
        }
        Ok(slot)
    }

    /// Frees the slot of `rootfs_dir` (the guest must have unmounted it): its blocks go back to
    /// the host and the file reads as zeros at the same size. `Ok(None)` when it had none.
    pub fn release(&mut self, rootfs_dir: &Path) -> Result<Option<usize>, SlotError> {
        let size = self.size_bytes;
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.owner.as_deref() == Some(rootfs_dir))
        else {
            return Ok(None);
        };
        slot.owner = None;
        release_blocks(slot, size)?;
        Ok(Some(slot.index))
    }
}

fn slot_io(slot: &Slot, what: &'static str, source: io::Error) -> SlotError {
    SlotError::Io {
        what,
        path: slot.path.clone(),
        source,
    }
}

/// Punches the whole file out (the size stays, so the VMM's disk never shrinks under the
/// guest); where the filesystem cannot punch holes, truncates to zero and back.
fn release_blocks(slot: &Slot, size: u64) -> Result<(), SlotError> {
    let file = File::options()
        .write(true)
        .open(&slot.path)
        .map_err(|source| slot_io(slot, "opening", source))?;
    let len = libc::off_t::try_from(size).unwrap_or(libc::off_t::MAX);
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(slot_io(slot, "releasing its blocks", err));
        }
        file.set_len(0)
            .and_then(|()| file.set_len(size))
            .map_err(|source| slot_io(slot, "truncating", source))?;
    }
    Ok(())
}

fn sync(slot: &Slot) -> Result<(), SlotError> {
    File::open(&slot.path)
        .and_then(|f| f.sync_all())
        .map_err(|source| slot_io(slot, "syncing", source))
}

/// Removes the slot files (the state directory removal does it too; this is for errors).
pub fn remove_files(slots: &DiskSlots) {
    for slot in &slots.slots {
        let _ = fs::remove_file(&slot.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn rootfs(dir: &Path, name: &str, file_bytes: usize) -> PathBuf {
        let root = dir.join(name);
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::write(root.join("bin/tool"), vec![7u8; file_bytes]).expect("write");
        fs::write(root.join("name"), name).expect("write");
        root
    }

    #[test]
    fn guest_names_follow_the_virtio_blk_scheme() {
        assert_eq!(guest_disk_name(0), "vda");
        assert_eq!(guest_disk_name(1), "vdb");
        assert_eq!(guest_disk_name(25), "vdz");
        assert_eq!(guest_disk_name(26), "vdaa");
        assert_eq!(guest_disk_name(27), "vdab");
        assert_eq!(guest_disk_name(701), "vdzz");
        assert_eq!(guest_disk_name(702), "vdaaa");
    }

    #[test]
    fn slots_come_after_the_other_disks_with_their_serials() {
        let slots = DiskSlots::new(Path::new("/run/x"), 3, 64, 1);
        let names: Vec<_> = slots
            .slots()
            .iter()
            .map(|s| {
                (
                    s.path.display().to_string(),
                    s.serial.as_str(),
                    s.guest_device.display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (
                    "/run/x/slot-0.img".into(),
                    "rust-vm-slot-0",
                    "/dev/vdb".into()
                ),
                (
                    "/run/x/slot-1.img".into(),
                    "rust-vm-slot-1",
                    "/dev/vdc".into()
                ),
                (
                    "/run/x/slot-2.img".into(),
                    "rust-vm-slot-2",
                    "/dev/vdd".into()
                ),
            ]
        );
        let alone = DiskSlots::new(Path::new("/run/x"), 1, 64, 0);
        assert_eq!(alone.slots()[0].guest_device, Path::new("/dev/vda"));
    }

    #[test]
    fn allocation_takes_the_lowest_free_slot_and_refuses_when_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut slots = DiskSlots::new(dir.path(), 2, 16, 1);
        slots.create_files().expect("create");
        assert_eq!(slots.allocate(Path::new("/a")).expect("a").index, 0);
        assert_eq!(slots.allocate(Path::new("/b")).expect("b").index, 1);
        let err = slots.allocate(Path::new("/c")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("all 2 pod disk slots"), "{text}");
        assert!(text.contains(SLOTS_KEY), "{text}");
        assert_eq!(slots.find(Path::new("/b")).map(|s| s.index), Some(1));
        assert_eq!(slots.release(Path::new("/a")).expect("release"), Some(0));
        assert_eq!(slots.release(Path::new("/a")).expect("again"), None);
        assert!(slots.find(Path::new("/a")).is_none());
        assert_eq!(slots.allocate(Path::new("/c")).expect("reuse").index, 0);
    }

    #[test]
    fn files_are_sparse_at_the_slot_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = DiskSlots::new(dir.path(), 2, 4096, 0);
        slots.create_files().expect("create");
        for slot in slots.slots() {
            let meta = fs::metadata(&slot.path).expect("stat");
            assert_eq!(meta.len(), 4096 * MIB);
            assert_eq!(meta.blocks(), 0, "{} is not sparse", slot.path.display());
        }
        // A second create refuses to overwrite.
        assert!(slots.create_files().is_err());
    }

    #[test]
    fn fill_writes_an_ext4_image_and_release_gives_the_blocks_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("mkdir");
        let a = rootfs(dir.path(), "a", 300_000);
        let b = rootfs(dir.path(), "b", 10);
        let mut slots = DiskSlots::new(&state, 1, 128, 1);
        slots.create_files().expect("create");

        let slot = slots.fill(&a).expect("fill a");
        assert_eq!(slot.guest_device, Path::new("/dev/vdb"));
        let meta = fs::metadata(&slot.path).expect("stat");
        assert_eq!(meta.len(), 128 * MIB, "the disk keeps its size");
        assert!(meta.blocks() > 0);
        assert!(
            meta.blocks() * 512 < 32 * MIB,
            "only what mkfs wrote is allocated: {} bytes",
            meta.blocks() * 512
        );
        let cat = std::process::Command::new("debugfs")
            .args(["-R", "cat /name"])
            .arg(&slot.path)
            .output()
            .expect("debugfs");
        assert_eq!(String::from_utf8_lossy(&cat.stdout), "a");

        let full = slots.fill(&b).unwrap_err();
        assert!(full.to_string().contains(SLOTS_KEY), "{full}");

        assert_eq!(slots.release(&a).expect("release"), Some(0));
        let meta = fs::metadata(&slot.path).expect("stat");
        assert_eq!(meta.len(), 128 * MIB);
        assert_eq!(meta.blocks(), 0, "the blocks went back to the host");

        let again = slots.fill(&b).expect("reuse for b");
        assert_eq!(again.index, 0);
        let cat = std::process::Command::new("debugfs")
            .args(["-R", "cat /name"])
            .arg(&again.path)
            .output()
            .expect("debugfs");
        assert_eq!(String::from_utf8_lossy(&cat.stdout), "b");
    }

    #[test]
    fn a_rootfs_larger_than_a_slot_is_refused_by_key_and_the_slot_stays_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("mkdir");
        let big = rootfs(dir.path(), "big", 20 * MIB as usize);
        let mut slots = DiskSlots::new(&state, 1, 16, 0);
        slots.create_files().expect("create");
        let err = slots.fill(&big).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(SLOT_SIZE_KEY), "{text}");
        assert!(text.contains("big"), "{text}");
        assert!(slots.find(&big).is_none());
        let small = rootfs(dir.path(), "small", 10);
        assert_eq!(slots.fill(&small).expect("small fits").index, 0);
    }
}
