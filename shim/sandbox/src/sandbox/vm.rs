//! `vm` back-end (the product): one `rust-vm-vmm` process per sandbox.
//!
//! The VMM gets a JSON configuration in the sandbox's `vm` directory: the guest kernel, the
//! guest's root (the read-only guest image as the first virtio-blk disk, `/dev/vda`, or the
//! initramfs), the pod's virtio-fs share (virtiofsd on `virtiofsd.sock`), with
//! `rootfs_mode = block` the first container's rootfs image as the next virtio-blk disk and the
//! pod disk slots after it, a vsock device whose host side is `vsock.sock`, and the serial
//! console written to `console.log`, all in that directory. Jailed (the default) the directory
//! is the VMM's root ([`crate::jail`]) and the configuration names everything as the VMM sees it
//! there ([`jailed_config`]).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rust_vm_protocol::SHARE_TAG;
use vmm_config::{
    BlockDeviceConfig, FsDeviceConfig, NetDeviceConfig, ReflectMode, SeccompMode, SerialOutput,
    VmConfig, VmmConfig, VsockDeviceConfig, BASE_CMDLINE, DEFAULT_FS_QUEUE_SIZE,
    DEFAULT_FS_REQUEST_QUEUES,
};

use super::{
    build_rootfs_image, process, require_file,
    slots::{guest_disk_name, DiskSlots},
    Paths, SandboxConfig, SandboxError, GUEST_CID,
};
use crate::host_cgroup;
use crate::jail::{Ids, Jail, JailError};
use crate::network::PodNetwork;
use crate::settings::{GuestRoot, LogLevel};

/// The guest device of the guest image (the first virtio-blk disk).
pub const GUEST_IMAGE_DEVICE: &str = "/dev/vda";

/// The guest device of the boot disk (`rootfs_mode = block`): the first disk after the guest's.
pub fn boot_disk_device(config: &SandboxConfig) -> PathBuf {
    PathBuf::from("/dev").join(guest_disk_name(config.guest_disks()))
}

/// A guest image's file system, from its superblock magic: what `rootfstype=` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Ext4,
    Erofs,
}

impl ImageFormat {
    pub fn fstype(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Erofs => "erofs",
        }
    }

    /// Reads the magic numbers: ext4's 0xEF53 at byte 1080, erofs's 0xE0F5E1E2 at byte 1024.
    pub fn detect(path: &Path) -> io::Result<Option<ImageFormat>> {
        let mut head = [0u8; 1082];
        let mut file = fs::File::open(path)?;
        match file.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        if head[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
            Ok(Some(ImageFormat::Erofs))
        } else if head[1080..1082] == 0xEF53u16.to_le_bytes() {
            Ok(Some(ImageFormat::Ext4))
        } else {
            Ok(None)
        }
    }
}

/// The guest kernel command line: serial console with early output, no reboot loop on panic
/// (the VMM ends with the guest), the agent as init (from the read-only guest image of
/// `format`, or from the initramfs when `image` is `None`), the configured extra words (on an
/// emulating host, what lets the kernel reach user space), and after ` -- ` the agent's own
/// options (its log level, the share's tag to mount, and the agent timeout as its bound on each
/// step of a container's setup, so the guest does not give up first).
pub fn kernel_cmdline(config: &SandboxConfig, image: Option<ImageFormat>) -> String {
    let mut cmdline = format!("{BASE_CMDLINE} earlyprintk=serial,ttyS0,115200 panic=-1");
    match image {
        Some(format) => cmdline.push_str(&format!(
            " root={GUEST_IMAGE_DEVICE} ro rootfstype={} init=/init",
            format.fstype()
        )),
        None => cmdline.push_str(" rdinit=/init"),
    }
    match config.log_level {
        LogLevel::Off | LogLevel::Error => cmdline.push_str(" loglevel=3"),
        LogLevel::Warn | LogLevel::Info => {}
        LogLevel::Debug | LogLevel::Trace => cmdline.push_str(" ignore_loglevel"),
    }
    let extra = config.kernel_args.trim();
    if !extra.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline.push_str(" -- --log-level ");
    cmdline.push_str(config.log_level.name());
    cmdline.push_str(" --share ");
    cmdline.push_str(SHARE_TAG);
    cmdline.push_str(&format!(
        " --step-timeout-secs {}",
        config.agent_step_timeout_secs()
    ));
    cmdline
}

/// How the guest's root reaches the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GuestBoot {
    /// The read-only guest image, attached as [`GUEST_IMAGE_DEVICE`].
    Image { path: PathBuf, format: ImageFormat },
    /// An initramfs the VMM loads into guest memory.
    Initramfs(PathBuf),
}

/// The configured guest image, checked to exist and to be a file system the kernel can boot.
fn guest_image(config: &SandboxConfig) -> Result<GuestBoot, SandboxError> {
    let path = &config.guest_image;
    require_file(
        "guest image",
        path,
        "run rootfs/build-guest-image.sh (scripts/setup.sh does) or set `guest_image` in /etc/rust-vm/config.toml",
    )?;
    match ImageFormat::detect(path) {
        Ok(Some(format)) => Ok(GuestBoot::Image {
            path: path.clone(),
            format,
        }),
        Ok(None) => Err(SandboxError::BadGuestImage(path.clone())),
        Err(source) => Err(SandboxError::Io {
            what: "reading the guest image",
            path: path.clone(),
            source,
        }),
    }
}

/// Checks the inputs before anything is built: the VMM configuration's values (as the VMM will
/// check them), and that the kernel, the guest's root, virtiofsd and the VMM exist.
pub(super) fn check_inputs(
    config: &SandboxConfig,
    paths: &Paths,
    slots: &DiskSlots,
) -> Result<(), SandboxError> {
    let boot = match config.guest_root {
        GuestRoot::Image => guest_image(config)?,
        GuestRoot::Initramfs => {
            require_file(
                "guest initramfs",
                &config.initramfs,
                "run rootfs/build-initramfs.sh or set `initramfs` in /etc/rust-vm/config.toml",
            )?;
            GuestBoot::Initramfs(config.initramfs.clone())
        }
    };
    vmm_config(config, paths, &boot, config.boot_disk(), slots, None)
        .check_values()
        .map_err(SandboxError::VmmConfig)?;
    require_file(
        "virtiofsd",
        &config.virtiofsd,
        "run scripts/setup.sh (installs it) or set `virtiofsd` in /etc/rust-vm/config.toml",
    )?;
    require_file(
        "guest kernel",
        &config.kernel,
        "run scripts/setup.sh (builds the guest kernel) or set `kernel` in /etc/rust-vm/config.toml",
    )?;
    require_file(
        "VMM binary",
        &config.vmm_path,
        "build it with `cargo build -p rust-vm-vmm` or set `vmm` in /etc/rust-vm/config.toml",
    )
}

/// Name of the uncompressed copy of the initramfs in the state directory.
const INFLATED_INITRAMFS: &str = "initramfs.cpio";

fn is_gzip(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = fs::File::open(path)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The initramfs the VMM loads. On an instruction-emulating host a gzip archive is inflated on
/// the host into the state directory first: the guest kernel accepts an uncompressed newc
/// archive as it is, and inflating in emulated ring 0 is what dominates the boot there (about 40
/// of 70 s for our 1.8 MB archive, docs/pvm-host-boot.md); `gzip -dc` takes milliseconds.
fn guest_initramfs(config: &SandboxConfig, paths: &Paths) -> Result<PathBuf, SandboxError> {
    let io_error = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { what, path, source }
    };
    let gzip = is_gzip(&config.initramfs)
        .map_err(io_error("reading the guest initramfs", &config.initramfs))?;
    if !config.emulating_host || !gzip {
        return Ok(config.initramfs.clone());
    }
    let inflated = paths.dir.join(INFLATED_INITRAMFS);
    let out = fs::File::create(&inflated)
        .map_err(io_error("writing the inflated initramfs", &inflated))?;
    let result = Command::new("gzip")
        .arg("-dc")
        .arg(&config.initramfs)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SandboxError::Spawn {
            program: "gzip".into(),
            source,
        })?;
    if !result.status.success() {
        let reason = format!(
            "gzip -dc {}: {}: {}",
            config.initramfs.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        );
        return Err(
            io_error("inflating the guest initramfs", &config.initramfs)(io::Error::other(reason)),
        );
    }
    Ok(inflated)
}

/// The descriptor number the VMM finds the pod's tap at.
pub(super) const TAP_FD: i32 = 3;

/// The VMM's configuration for this sandbox: the guest image (read-only), the boot disk (the
/// first container's rootfs image) and the pod disk slots, so the guest names them in this order
/// (see [`DiskSlots::new`]); the vsock device and the console in the state directory; the pod's
/// NIC over the tap at [`TAP_FD`] when the pod has a network.
pub(super) fn vmm_config(
    config: &SandboxConfig,
    paths: &Paths,
    boot: &GuestBoot,
    with_disk: bool,
    slots: &DiskSlots,
    network: Option<&PodNetwork>,
) -> VmConfig {
    let (image, initrd, format) = match boot {
        GuestBoot::Image { path, format } => (
            Some(BlockDeviceConfig {
                path: path.clone(),
                read_only: true,
                id: Some("guest-root".into()),
            }),
            None,
            Some(*format),
        ),
        GuestBoot::Initramfs(path) => (None, Some(path.clone()), None),
    };
    let boot_disk = with_disk.then(|| BlockDeviceConfig {
        path: paths.image.clone(),
        read_only: false,
        id: Some("rootfs".into()),
    });
    let slot_disks = slots.slots().iter().map(|slot| BlockDeviceConfig {
        path: slot.path.clone(),
        read_only: false,
        id: Some(slot.serial.clone()),
    });
    VmConfig {
        kernel: config.kernel.clone(),
        initrd,
        cmdline: kernel_cmdline(config, format),
        vcpus: config.vcpus,
        mem_mib: config.mem_mib,
        block: image
            .into_iter()
            .chain(boot_disk)
            .chain(slot_disks)
            .collect(),
        vsock: Some(VsockDeviceConfig {
            guest_cid: GUEST_CID,
            uds_path: paths.socket.clone(),
        }),
        fs: vec![FsDeviceConfig {
            socket: paths.share.socket.clone(),
            tag: SHARE_TAG.to_string(),
            request_queues: DEFAULT_FS_REQUEST_QUEUES,
            queue_size: DEFAULT_FS_QUEUE_SIZE,
        }],
        net: network
            .map(|n| NetDeviceConfig {
                tap_fd: TAP_FD,
                mac: n.mac(),
                mtu: u16::try_from(n.mtu()).unwrap_or(u16::MAX),
            })
            .into_iter()
            .collect(),
        serial: SerialOutput::File(paths.console.clone()),
        cpu_template: config.cpu_template,
        log_level: config.log_level,
        // The VMM detects an emulating host itself; `on` covers a host the config declares one.
        reflect_emulation_failures: if config.emulating_host {
            ReflectMode::On
        } else {
            ReflectMode::Auto
        },
        seccomp: SeccompMode::On,
        kvm_fd: None,
    }
}

/// The descriptor number the jailed VMM finds `/dev/kvm` at.
pub(super) const KVM_FD: i32 = 4;

/// `vmm` as the jailed VMM sees it: what it only reads bound into `jail` read-only (kernel,
/// initramfs, the guest image), what lies in the jail's root by its path there, `/dev/kvm` as
/// [`KVM_FD`], reflection of emulation failures decided for this host.
pub(super) fn jailed_config(mut vmm: VmConfig, jail: &mut Jail) -> Result<VmConfig, JailError> {
    let inside = |jail: &Jail, path: &Path| jail.inside(path).unwrap_or_else(|| path.to_path_buf());
    vmm.kernel = jail.bind_read_only("guest kernel", &vmm.kernel, "vmlinux")?;
    if let Some(initrd) = vmm.initrd.take() {
        vmm.initrd = Some(jail.bind_read_only("guest initramfs", &initrd, "initrd")?);
    }
    for block in &mut vmm.block {
        block.path = match jail.inside(&block.path) {
            Some(path) => path,
            // Only the guest image lives outside the sandbox, and it is read-only.
            None => jail.bind_read_only("guest image", &block.path, "guest-root.img")?,
        };
    }
    if let Some(vsock) = vmm.vsock.as_mut() {
        vsock.uds_path = inside(jail, &vsock.uds_path);
    }
    for fs in &mut vmm.fs {
        fs.socket = inside(jail, &fs.socket);
    }
    if let SerialOutput::File(path) = &vmm.serial {
        vmm.serial = SerialOutput::File(inside(jail, path));
    }
    vmm.kvm_fd = Some(KVM_FD);
    // The jailed VMM has no /proc or /sys to tell the host's kind from: decided here.
    if vmm.reflect_emulation_failures == ReflectMode::Auto {
        vmm.reflect_emulation_failures =
            if ReflectMode::Auto.enabled_on(&vmm_config::host::HostKind::detect()) {
                ReflectMode::On
            } else {
                ReflectMode::Off
            };
    }
    Ok(vmm)
}

/// Starts the VMM: in its jail (`config.jail`), or with the host's view in the pod's network
/// namespace. With a pod network the tap is [`TAP_FD`].
pub(super) fn launch(
    config: &SandboxConfig,
    paths: &Paths,
    slots: &DiskSlots,
    network: Option<&PodNetwork>,
    cgroup_procs: Vec<CString>,
) -> Result<(Child, u32), SandboxError> {
    if let Some(rootfs) = config.rootfs.as_ref().filter(|_| config.boot_disk()) {
        build_rootfs_image(rootfs, &paths.image)?;
    }
    let boot = match config.guest_root {
        GuestRoot::Image => guest_image(config)?,
        GuestRoot::Initramfs => GuestBoot::Initramfs(guest_initramfs(config, paths)?),
    };
    slots.create_files()?;
    let vmm = vmm_config(config, paths, &boot, config.boot_disk(), slots, network);
    let write_config = |vmm: VmConfig| {
        fs::write(&paths.vmm_config, VmmConfig::from(vmm).to_json()).map_err(|source| {
            SandboxError::Io {
                what: "writing the VMM configuration",
                path: paths.vmm_config.clone(),
                source,
            }
        })
    };
    let (out, err) = process::log_stdio(&paths.vmm_log).map_err(|source| SandboxError::Io {
        what: "creating the VMM log",
        path: paths.vmm_log.clone(),
        source,
    })?;
    let tap = match network {
        Some(network) => Some(network.tap().ok_or_else(|| SandboxError::Io {
            what: "the pod's tap is closed",
            path: network.namespace_path().to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotConnected),
        })?),
        None => None,
    };
    // Held open until the VMM has its copy.
    let mut kvm = None;
    let mut passed = Vec::new();
    let mut cmd;
    let jail = if config.jail {
        let ids = Ids::for_sandbox(
            &host_cgroup::name(&config.id, &config.state_dir),
            config.jail_id_base,
        );
        let mut jail = Jail::new(&paths.vm_dir, ids);
        let jailed = jailed_config(vmm, &mut jail).map_err(SandboxError::Jail)?;
        let executable = jail
            .bind_executable(&config.vmm_path, "rust-vm-vmm")
            .map_err(SandboxError::Jail)?;
        write_config(jailed)?;
        let mut owned: Vec<&Path> = vec![&paths.vmm_config, &paths.share.socket];
        if config.boot_disk() {
            owned.push(&paths.image);
        }
        owned.extend(slots.slots().iter().map(|slot| slot.path.as_path()));
        let prepared = jail.prepare(&owned).map_err(SandboxError::Jail)?;
        let device = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(KVM_DEVICE)
            .map_err(|source| SandboxError::Io {
                what: "opening",
                path: PathBuf::from(KVM_DEVICE),
                source,
            })?;
        cmd = Command::new(&executable.path);
        cmd.env_clear();
        if let Some(library_path) = executable.library_path {
            cmd.env("LD_LIBRARY_PATH", library_path);
        }
        let config_path = jail.inside(&paths.vmm_config).unwrap_or_default();
        cmd.arg("--config").arg(config_path);
        passed.push((device.as_raw_fd(), KVM_FD));
        kvm = Some(device);
        log::info!(
            "sandbox {}: VMM jailed in {} as uid/gid {}",
            config.id,
            paths.vm_dir.display(),
            ids.uid
        );
        Some(prepared)
    } else {
        write_config(vmm)?;
        cmd = Command::new(&config.vmm_path);
        cmd.arg("--config").arg(&paths.vmm_config);
        None
    };
    // Names the sandbox in `ps`: the jailed VMM's paths are its jail's.
    cmd.arg("--id")
        .arg(&config.state_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(tap) = tap {
        passed.push((tap.as_raw_fd(), TAP_FD));
    }
    process::pass_fds(&mut cmd, passed);
    process::join_cgroup(&mut cmd, cgroup_procs);
    let child = match jail {
        Some(jail) => {
            let spawned = process::spawn_jailed(cmd, jail);
            drop(kvm);
            spawned.map_err(|source| match failed_jail_step(&paths.vmm_log) {
                Some(step) => SandboxError::EnterJail {
                    program: config.vmm_path.clone(),
                    step,
                    source,
                },
                None => SandboxError::Spawn {
                    program: config.vmm_path.clone(),
                    source,
                },
            })?
        }
        None => {
            if let Some(network) = network {
                process::enter_network_namespace(&mut cmd, network.namespace().as_raw_fd());
            }
            process::spawn_owned(cmd).map_err(|source| SandboxError::Spawn {
                program: config.vmm_path.clone(),
                source,
            })?
        }
    };
    let pid = child.id();
    Ok((child, pid))
}

/// The step of the jail that failed, as the child wrote it to the VMM's log.
fn failed_jail_step(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix(crate::jail::FAILED_STEP_PREFIX))
        .map(str::to_string)
}

/// What a jailed VMM gets as [`KVM_FD`].
const KVM_DEVICE: &str = "/dev/kvm";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Backend;
    use crate::RuntimeConfig;
    use std::time::Duration;

    fn config(emulating_host: bool) -> SandboxConfig {
        let mut cfg = RuntimeConfig::default().sandbox_config("t", Path::new("/run/t"));
        cfg.backend = Backend::Vm;
        cfg.emulating_host = emulating_host;
        cfg
    }

    fn no_slots() -> DiskSlots {
        DiskSlots::new(Path::new("/run/t"), 0, 0, 2)
    }

    fn image() -> GuestBoot {
        GuestBoot::Image {
            path: "/img".into(),
            format: ImageFormat::Ext4,
        }
    }

    fn initramfs() -> GuestBoot {
        GuestBoot::Initramfs("/i".into())
    }

    /// A file with `magic` at `offset` in an otherwise empty 4 KiB.
    fn write_magic(path: &Path, offset: usize, magic: &[u8]) {
        let mut data = vec![0u8; 4096];
        data[offset..offset + magic.len()].copy_from_slice(magic);
        fs::write(path, data).expect("write image");
    }

    #[test]
    fn cmdline_has_console_init_extra_words_and_agent_options_last() {
        let mut cfg = config(false);
        cfg.kernel_args = "noxsave  syscall_pf_fixup ".into();
        let cmdline = kernel_cmdline(&cfg, None);
        assert!(cmdline.starts_with("console=ttyS0 "), "{cmdline}");
        assert!(cmdline.starts_with(BASE_CMDLINE), "{cmdline}");
        assert!(cmdline.contains(" rdinit=/init "), "{cmdline}");
        assert!(!cmdline.contains("root="), "{cmdline}");
        assert!(
            cmdline.contains(" noxsave  syscall_pf_fixup -- "),
            "{cmdline}"
        );
        cfg.agent_timeout = Duration::from_secs(600);
        let cmdline = kernel_cmdline(&cfg, None);
        assert!(
            cmdline.ends_with(" -- --log-level warn --share rust-vm-share --step-timeout-secs 600"),
            "{cmdline}"
        );
        cfg.kernel_args = String::new();
        assert!(!kernel_cmdline(&cfg, None).contains("  "));
    }

    #[test]
    fn cmdline_boots_the_image_read_only_with_the_agent_as_init() {
        let cfg = config(false);
        let cmdline = kernel_cmdline(&cfg, Some(ImageFormat::Erofs));
        assert!(
            cmdline.contains(" root=/dev/vda ro rootfstype=erofs init=/init "),
            "{cmdline}"
        );
        assert!(!cmdline.contains("rdinit"), "{cmdline}");
    }

    #[test]
    fn vmm_config_names_every_device() {
        let cfg = config(false);
        let paths = Paths::new(Path::new("/run/t"), Backend::Vm);
        let vmm = vmm_config(&cfg, &paths, &image(), true, &no_slots(), None);
        assert_eq!(vmm.block[0].path, Path::new("/img"));
        assert!(vmm.block[0].read_only, "the guest image is shared");
        assert_eq!(vmm.block[1].path, Path::new("/run/t/vm/rootfs.ext4"));
        assert!(!vmm.block[1].read_only);
        assert_eq!(vmm.initrd, None);
        let vsock = vmm.vsock.as_ref().expect("vsock");
        assert_eq!(vsock.uds_path, Path::new("/run/t/vm/vsock.sock"));
        assert_eq!(vsock.guest_cid, 3);
        assert_eq!(
            vmm.serial,
            SerialOutput::File("/run/t/vm/console.log".into())
        );
        assert_eq!((vmm.vcpus, vmm.mem_mib), (cfg.vcpus, cfg.mem_mib));
        assert_eq!(vmm.fs.len(), 1);
        assert_eq!(vmm.fs[0].socket, Path::new("/run/t/vm/virtiofsd.sock"));
        assert_eq!(vmm.fs[0].tag, SHARE_TAG);
        let from_initramfs = vmm_config(&cfg, &paths, &initramfs(), false, &no_slots(), None);
        assert!(from_initramfs.block.is_empty());
        assert_eq!(from_initramfs.initrd.as_deref(), Some(Path::new("/i")));
    }

    #[test]
    fn the_jailed_vmm_sees_its_files_at_the_root_and_the_rest_bound_read_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let readable = |name: &str| {
            let path = dir.path().join(name);
            fs::write(&path, name).expect("write");
            path
        };
        let mut cfg = config(false);
        cfg.kernel = readable("vmlinux");
        let paths = Paths::new(&dir.path().join("state"), Backend::Vm);
        let slots = DiskSlots::new(&paths.vm_dir, 1, 64, 2);
        let boot = GuestBoot::Image {
            path: readable("guest.img"),
            format: ImageFormat::Erofs,
        };
        let vmm = vmm_config(&cfg, &paths, &boot, true, &slots, None);
        let mut jail = Jail::new(&paths.vm_dir, Ids::for_sandbox("t", 100_000));
        let jailed = jailed_config(vmm.clone(), &mut jail).expect("jailed");
        assert_eq!(jailed.kernel, Path::new("/vmlinux"));
        let disks: Vec<_> = jailed.block.iter().map(|b| b.path.clone()).collect();
        assert_eq!(
            disks,
            [
                PathBuf::from("/guest-root.img"),
                PathBuf::from("/rootfs.ext4"),
                PathBuf::from("/slot-0.img")
            ]
        );
        assert_eq!(
            jailed.vsock.as_ref().map(|v| v.uds_path.clone()),
            Some(PathBuf::from("/vsock.sock"))
        );
        assert_eq!(jailed.fs[0].socket, Path::new("/virtiofsd.sock"));
        assert_eq!(jailed.serial, SerialOutput::File("/console.log".into()));
        assert_eq!(jailed.kvm_fd, Some(KVM_FD));
        assert_eq!(vmm.kvm_fd, None, "unjailed, the VMM opens /dev/kvm");
        assert_ne!(jailed.reflect_emulation_failures, ReflectMode::Auto);
        jailed.check_values().expect("a valid VMM configuration");
        // The initramfs instead of the image: bound as well.
        let initrd = GuestBoot::Initramfs(readable("initramfs.cpio"));
        let vmm = vmm_config(&cfg, &paths, &initrd, false, &no_slots(), None);
        let jailed = jailed_config(vmm, &mut jail).expect("jailed");
        assert_eq!(jailed.initrd.as_deref(), Some(Path::new("/initrd")));
    }

    #[test]
    fn the_boot_disk_follows_the_guest_image() {
        let mut cfg = config(false);
        assert_eq!(boot_disk_device(&cfg), Path::new("/dev/vdb"));
        cfg.guest_root = GuestRoot::Initramfs;
        assert_eq!(boot_disk_device(&cfg), Path::new("/dev/vda"));
    }

    #[test]
    fn image_format_is_read_from_the_superblock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("img");
        write_magic(&file, 1080, &[0x53, 0xef]);
        assert_eq!(ImageFormat::detect(&file).unwrap(), Some(ImageFormat::Ext4));
        write_magic(&file, 1024, &[0xe2, 0xe1, 0xf5, 0xe0]);
        assert_eq!(
            ImageFormat::detect(&file).unwrap(),
            Some(ImageFormat::Erofs)
        );
        write_magic(&file, 0, b"070701");
        assert_eq!(ImageFormat::detect(&file).unwrap(), None);
        fs::write(&file, b"short").expect("write");
        assert_eq!(ImageFormat::detect(&file).unwrap(), None);
    }

    #[test]
    fn a_missing_or_foreign_guest_image_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(dir.path(), Backend::Vm);
        let mut cfg = config(false);
        cfg.guest_image = dir.path().join("guest-root.img");
        let err = check_inputs(&cfg, &paths, &no_slots()).expect_err("missing");
        assert!(
            matches!(
                err,
                SandboxError::MissingFile {
                    what: "guest image",
                    ..
                }
            ),
            "{err}"
        );
        write_magic(&cfg.guest_image, 0, b"070701");
        let err = check_inputs(&cfg, &paths, &no_slots()).expect_err("a cpio archive");
        assert!(matches!(err, SandboxError::BadGuestImage(_)), "{err}");
        assert!(err.to_string().contains("guest-root.img"), "{err}");
    }

    #[test]
    fn the_file_the_vmm_reads_is_the_typed_config() {
        let cfg = config(true);
        let paths = Paths::new(Path::new("/run/t"), Backend::Vm);
        let vmm = vmm_config(&cfg, &paths, &image(), true, &no_slots(), None);
        let json = VmmConfig::from(vmm.clone()).to_json();
        let read: VmmConfig = serde_json::from_str(&json).expect("the VMM's parser");
        assert_eq!(read.finish().expect("complete"), vmm);
    }

    #[test]
    fn reflection_is_forced_on_only_for_a_declared_emulating_host() {
        let paths = Paths::new(Path::new("/run/t"), Backend::Vm);
        let on = vmm_config(
            &config(true),
            &paths,
            &initramfs(),
            false,
            &no_slots(),
            None,
        );
        assert_eq!(on.reflect_emulation_failures, ReflectMode::On);
        let auto = vmm_config(
            &config(false),
            &paths,
            &initramfs(),
            false,
            &no_slots(),
            None,
        );
        assert_eq!(auto.reflect_emulation_failures, ReflectMode::Auto);
    }

    #[test]
    fn bad_vmm_values_are_refused_before_anything_is_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(false);
        cfg.vcpus = 300;
        cfg.guest_image = dir.path().join("guest-root.img");
        write_magic(&cfg.guest_image, 1080, &[0x53, 0xef]);
        let paths = Paths::new(Path::new("/run/t"), Backend::Vm);
        let err = check_inputs(&cfg, &paths, &no_slots()).expect_err("300 vCPUs");
        assert!(matches!(err, SandboxError::VmmConfig(_)), "{err}");
        assert!(
            crate::error_chain(&err).contains("vcpus is 300"),
            "{}",
            crate::error_chain(&err)
        );
    }

    #[test]
    fn gzip_initramfs_is_inflated_on_the_host_only_where_it_helps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(dir.path(), Backend::Vm);
        let plain = dir.path().join("plain.cpio");
        fs::write(&plain, b"070701 an uncompressed archive").expect("write");
        let gz = dir.path().join("initramfs.cpio.gz");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -c {} > {}", plain.display(), gz.display()))
            .status()
            .expect("gzip");
        assert!(status.success());

        let mut cfg = config(true);
        cfg.initramfs = gz.clone();
        let inflated = guest_initramfs(&cfg, &paths).expect("inflate");
        assert_eq!(inflated, dir.path().join(INFLATED_INITRAMFS));
        assert_eq!(
            fs::read(&inflated).expect("read"),
            fs::read(&plain).expect("read")
        );
        // Already uncompressed, or on hardware KVM: the configured file as it is.
        cfg.initramfs = plain.clone();
        assert_eq!(guest_initramfs(&cfg, &paths).expect("plain"), plain);
        let mut hw = config(false);
        hw.initramfs = gz.clone();
        assert_eq!(guest_initramfs(&hw, &paths).expect("hw"), gz);
        // A broken archive is an error naming the file.
        let bad = dir.path().join("bad.gz");
        fs::write(&bad, [0x1f, 0x8b, 0, 0]).expect("write");
        cfg.initramfs = bad.clone();
        let err = guest_initramfs(&cfg, &paths).expect_err("corrupt gzip");
        assert!(err.to_string().contains("bad.gz"), "{err}");
    }

    #[test]
    fn slots_follow_the_boot_disk_with_their_serials() {
        let cfg = config(false);
        let paths = Paths::new(Path::new("/run/x"), Backend::Vm);
        let slots = DiskSlots::new(Path::new("/run/x"), 2, 64, 2);
        let vmm = vmm_config(&cfg, &paths, &image(), true, &slots, None);
        let ids: Vec<_> = vmm.block.iter().map(|b| b.id.as_deref()).collect();
        assert_eq!(
            ids,
            [
                Some("guest-root"),
                Some("rootfs"),
                Some("rust-vm-slot-0"),
                Some("rust-vm-slot-1")
            ]
        );
        assert_eq!(vmm.block[2].path, Path::new("/run/x/slot-0.img"));
        assert_eq!(slots.slots()[0].guest_device, Path::new("/dev/vdc"));
        assert!(!vmm.block[3].read_only);
    }
}
