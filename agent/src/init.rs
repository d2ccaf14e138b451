//! PID 1 duties in the guest: the basic filesystems, hostname, loopback, power-off.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// In mount order: a target must exist in an already mounted filesystem.
const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
];

/// Controllers made available to container cgroups.
const CGROUP_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// ramfs's `statfs` magic (linux/magic.h): the kernel's rootfs without tmpfs. Not in `libc`.
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

/// Where the initramfs root is bound before it is moved over `/` (removed right after).
const REROOT_DIR: &str = "/.agent-root";

/// With an initramfs the guest's root is the kernel's rootfs, the one mount `pivot_root` cannot
/// leave, so no container could pivot into its own root. This moves the root onto a bind mount
/// of itself (as switch_root moves onto a real root): the same files with no copy, and a root
/// that now has a parent mount. Returns whether it did so; a root on a disk image is left alone.
/// Must run before anything is mounted (a non-recursive bind carries no submounts).
pub fn leave_kernel_rootfs() -> anyhow::Result<bool> {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    let kind = statfs("/").context("statfs /")?.filesystem_type();
    if kind != FsType(RAMFS_MAGIC as _) && kind != TMPFS_MAGIC {
        return Ok(false);
    }
    fs::create_dir_all(REROOT_DIR).with_context(|| format!("creating {REROOT_DIR}"))?;
    mount(
        Some("/"),
        REROOT_DIR,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding / on {REROOT_DIR}"))?;
    nix::unistd::chdir(REROOT_DIR).with_context(|| format!("chdir {REROOT_DIR}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the bound root over /")?;
    nix::unistd::chroot(".").context("chroot into the bound root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    // The same directory, seen through the new root; nothing is mounted on it any more.
    fs::remove_dir(REROOT_DIR).with_context(|| format!("removing {REROOT_DIR}"))?;
    Ok(true)
}

/// Opens the serial console for logging.
pub fn open_console() -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/console")
        .ok()
}

/// Sets up the guest. A failing step is logged and the next one still tried: a guest with,
/// say, no loopback is still more useful than one whose init died.
pub fn setup(hostname: &str) {
    for m in MOUNTS {
        if let Err(e) = mount_one(m) {
            log::error!("{e:#}");
        }
    }
    enable_controllers();
    if let Err(e) = nix::unistd::sethostname(hostname) {
        log::error!("setting the hostname to {hostname:?}: {e}");
    }
    if let Err(e) = loopback_up() {
        log::error!("bringing lo up: {e}");
    }
}

fn mount_one(m: &Mount) -> anyhow::Result<()> {
    fs::create_dir_all(m.target).with_context(|| format!("creating {}", m.target))?;
    match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
        Ok(()) => Ok(()),
        // Already mounted (by the kernel or an initramfs script): fine.
        Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mounting {} on {}", m.fstype, m.target)),
    }
}

/// Mounts the pod's virtio-fs share (see `rust_vm_protocol::GUEST_SHARE_DIR`). Device nodes on
/// it are not honoured: containers get their /dev from the agent, never from the host.
pub fn mount_share(tag: &str) -> anyhow::Result<()> {
    let dir = rust_vm_protocol::GUEST_SHARE_DIR;
    fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    mount(
        Some(tag),
        dir,
        Some("virtiofs"),
        MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| format!("mounting the virtio-fs share {tag:?} on {dir}"))?;
    log::info!("virtio-fs share {tag:?} mounted on {dir}");
    Ok(())
}

fn enable_controllers() {
    let control = Path::new("/sys/fs/cgroup/cgroup.subtree_control");
    for controller in CGROUP_CONTROLLERS {
        // One at a time, so that a kernel without one controller still gets the others.
        if let Err(e) = fs::write(control, format!("+{controller}")) {
            log::warn!("enabling the {controller} cgroup controller: {e}");
        }
    }
}

fn loopback_up() -> io::Result<()> {
    // Interface ioctls work on any socket; AF_UNIX exists even in a kernel without IPv4.
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq that outlives the calls.
    unsafe {
        if libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Flushes filesystems and ends the VM. Without ACPI (our VMM) the kernel cannot power off: it
/// would print "System halted" and spin forever, so the VM is rebooted instead, which our VMM
/// (and Firecracker's) turns into its exit. With ACPI it is a real power-off.
pub fn power_off() -> ! {
    let mode = if Path::new("/sys/firmware/acpi").exists() {
        log::info!("powering off");
        RebootMode::RB_POWER_OFF
    } else {
        log::info!("powering off by reboot (no ACPI power-off; the VMM exits on reboot)");
        RebootMode::RB_AUTOBOOT
    };
    nix::unistd::sync();
    let Err(err) = reboot(mode);
    log::error!("power off failed: {err}; halting");
    loop {
        std::thread::park();
    }
}
