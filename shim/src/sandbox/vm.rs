//! `vm` back-end (the product): one `rust-vm-vmm` process per sandbox.
//!
//! The VMM gets a JSON configuration in the state directory: the guest kernel, the initramfs
//! (agent as `/init`), the container rootfs image as virtio-blk (`/dev/vda` in the guest), a
//! vsock device whose host side is `vsock.sock` in the state directory, and the serial console
//! written to `console.log` there.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use super::{
    build_rootfs_image, process, require_file, slots::DiskSlots, Paths, SandboxConfig,
    SandboxError, GUEST_CID,
};

/// The guest device of the first virtio-blk disk.
pub const ROOTFS_DEVICE: &str = "/dev/vda";

/// The guest kernel command line: serial console with early output, no reboot loop on panic
/// (the VMM ends with the guest), the agent as init from the initramfs, the configured extra
/// words (on an emulating host, what lets the kernel reach user space), and after ` -- ` the
/// agent's own options.
pub fn kernel_cmdline(config: &SandboxConfig) -> String {
    use crate::config::LogLevel;
    let mut cmdline = String::from(
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 \
         i8042.noaux i8042.nomux i8042.dumbkbd rdinit=/init",
    );
    match config.log_level {
        LogLevel::Error => cmdline.push_str(" loglevel=3"),
        LogLevel::Warn | LogLevel::Info => {}
        LogLevel::Debug | LogLevel::Trace => cmdline.push_str(" ignore_loglevel"),
    }
    let extra = config.kernel_args.trim();
    if !extra.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline.push_str(" -- --log-level ");
    cmdline.push_str(config.log_level.as_str());
    cmdline
}

pub(super) fn check_inputs(config: &SandboxConfig) -> Result<(), SandboxError> {
    require_file(
        "guest kernel",
        &config.kernel,
        "run scripts/setup.sh (builds the guest kernel) or set `kernel` in /etc/rust-vm/config.toml",
    )?;
    require_file(
        "guest initramfs",
        &config.initramfs,
        "run rootfs/build-initramfs.sh or set `initramfs` in /etc/rust-vm/config.toml",
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

pub(super) fn vmm_config(
    config: &SandboxConfig,
    paths: &Paths,
    initramfs: &Path,
    with_disk: bool,
    slots: &DiskSlots,
) -> serde_json::Value {
    let mut drives = Vec::new();
    if with_disk {
        drives.push(json!({ "path": paths.image, "read_only": false, "id": "rootfs" }));
    }
    // After the boot disk, so the guest names them in this order (see DiskSlots::new).
    for slot in slots.slots() {
        drives.push(json!({ "path": slot.path, "read_only": false, "id": slot.serial }));
    }
    let mut vmm = json!({
        "kernel": config.kernel,
        "initrd": initramfs,
        "cmdline": kernel_cmdline(config),
        "vcpus": config.vcpus,
        "mem_mib": config.mem_mib,
        "cpu_template": config.cpu_template,
        "block": drives,
        "vsock": { "guest_cid": GUEST_CID, "uds_path": paths.socket },
        "serial": paths.console,
        "log_level": config.log_level.as_str(),
    });
    if config.emulating_host {
        // The VMM detects such a host itself; this covers a host the config declares one.
        vmm["reflect_emulation_failures"] = json!("on");
    }
    vmm
}

pub(super) fn launch(
    config: &SandboxConfig,
    paths: &Paths,
    slots: &DiskSlots,
) -> Result<(Child, u32), SandboxError> {
    if let Some(rootfs) = &config.rootfs {
        build_rootfs_image(rootfs, &paths.image)?;
    }
    let initramfs = guest_initramfs(config, paths)?;
    slots.create_files()?;
    let vmm_json = vmm_config(config, paths, &initramfs, config.rootfs.is_some(), slots);
    let text = serde_json::to_vec_pretty(&vmm_json).map_err(|e| SandboxError::Io {
        what: "writing the VMM configuration",
        path: paths.vmm_config.clone(),
        source: e.into(),
    })?;
    fs::write(&paths.vmm_config, text).map_err(|source| SandboxError::Io {
        what: "writing the VMM configuration",
        path: paths.vmm_config.clone(),
        source,
    })?;
    let (out, err) = process::log_stdio(&paths.vmm_log).map_err(|source| SandboxError::Io {
        what: "creating the VMM log",
        path: paths.vmm_log.clone(),
        source,
    })?;
    let mut cmd = Command::new(&config.vmm_path);
    cmd.arg("--config")
        .arg(&paths.vmm_config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = process::spawn_owned(cmd).map_err(|source| SandboxError::Spawn {
        program: config.vmm_path.clone(),
        source,
    })?;
    let pid = child.id();
    Ok((child, pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Backend;

    #[test]
    fn cmdline_has_console_init_extra_words_and_agent_options_last() {
        let mut cfg = SandboxConfig::new(Backend::Vm, "x", std::path::Path::new("/run/x"));
        cfg.kernel_args = "noxsave  syscall_pf_fixup ".into();
        let cmdline = kernel_cmdline(&cfg);
        assert!(cmdline.starts_with("console=ttyS0 "), "{cmdline}");
        assert!(cmdline.contains(" rdinit=/init "), "{cmdline}");
        assert!(
            cmdline.contains(" noxsave  syscall_pf_fixup -- "),
            "{cmdline}"
        );
        assert!(cmdline.ends_with(" -- --log-level warn"), "{cmdline}");
        cfg.kernel_args = String::new();
        assert!(!kernel_cmdline(&cfg).contains("  "));
    }

    #[test]
    fn vmm_config_names_every_device() {
        let cfg = SandboxConfig::new(Backend::Vm, "x", std::path::Path::new("/run/x"));
        let paths = crate::sandbox::Paths::new(std::path::Path::new("/run/x"), Backend::Vm);
        let none = DiskSlots::new(std::path::Path::new("/run/x"), 0, 0, 1);
        let json = vmm_config(&cfg, &paths, &cfg.initramfs, true, &none);
        assert_eq!(json["block"][0]["path"], "/run/x/rootfs.ext4");
        assert_eq!(json["block"][0]["read_only"], false);
        assert_eq!(json["vsock"]["uds_path"], "/run/x/vsock.sock");
        assert_eq!(json["vsock"]["guest_cid"], 3);
        assert_eq!(json["serial"], "/run/x/console.log");
        assert_eq!(json["initrd"], cfg.initramfs.display().to_string());
        assert_eq!(
            vmm_config(&cfg, &paths, &cfg.initramfs, false, &none)["block"],
            serde_json::json!([])
        );
    }

    fn config(emulating_host: bool) -> SandboxConfig {
        let mut cfg = SandboxConfig::new(Backend::Vm, "t", std::path::Path::new("/run/t"));
        cfg.emulating_host = emulating_host;
        cfg
    }

    #[test]
    fn reflection_is_forced_on_only_for_a_declared_emulating_host() {
        let paths = Paths::new(std::path::Path::new("/run/t"), Backend::Vm);
        let vmm = vmm_config(
            &config(true),
            &paths,
            Path::new("/i"),
            false,
            &DiskSlots::new(Path::new("/run/t"), 0, 0, 0),
        );
        assert_eq!(vmm["reflect_emulation_failures"], "on");
        let vmm = vmm_config(
            &config(false),
            &paths,
            Path::new("/i"),
            false,
            &DiskSlots::new(Path::new("/run/t"), 0, 0, 0),
        );
        assert!(vmm.get("reflect_emulation_failures").is_none(), "{vmm}");
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
        let cfg = SandboxConfig::new(Backend::Vm, "x", std::path::Path::new("/run/x"));
        let paths = crate::sandbox::Paths::new(std::path::Path::new("/run/x"), Backend::Vm);
        let slots = DiskSlots::new(std::path::Path::new("/run/x"), 2, 64, 1);
        let json = vmm_config(&cfg, &paths, &cfg.initramfs, true, &slots);
        assert_eq!(json["block"][0]["id"], "rootfs");
        assert_eq!(json["block"][1]["path"], "/run/x/slot-0.img");
        assert_eq!(json["block"][1]["id"], "rust-vm-slot-0");
        assert_eq!(json["block"][2]["id"], "rust-vm-slot-1");
        assert_eq!(json["block"][2]["read_only"], false);
        assert!(json["block"].get(3).is_none());
    }
}
