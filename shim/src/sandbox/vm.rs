//! `vm` back-end (the product): one `rust-vm-vmm` process per sandbox.
//!
//! The VMM gets a JSON configuration in the state directory: the guest kernel, the initramfs
//! (agent as `/init`), the container rootfs image as virtio-blk (`/dev/vda` in the guest), a
//! vsock device whose host side is `vsock.sock` in the state directory, and the serial console
//! written to `console.log` there.

use std::fs;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use super::{
    build_rootfs_image, process, require_file, Paths, SandboxConfig, SandboxError, GUEST_CID,
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

pub(super) fn vmm_config(
    config: &SandboxConfig,
    paths: &Paths,
    with_disk: bool,
) -> serde_json::Value {
    let drives = if with_disk {
        json!([{ "path": paths.image, "read_only": false, "id": "rootfs" }])
    } else {
        json!([])
    };
    let mut vmm = json!({
        "kernel": config.kernel,
        "initrd": config.initramfs,
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

pub(super) fn launch(config: &SandboxConfig, paths: &Paths) -> Result<(Child, u32), SandboxError> {
    if let Some(rootfs) = &config.rootfs {
        build_rootfs_image(rootfs, &paths.image)?;
    }
    let vmm_json = vmm_config(config, paths, config.rootfs.is_some());
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
        let json = vmm_config(&cfg, &paths, true);
        assert_eq!(json["block"][0]["path"], "/run/x/rootfs.ext4");
        assert_eq!(json["block"][0]["read_only"], false);
        assert_eq!(json["vsock"]["uds_path"], "/run/x/vsock.sock");
        assert_eq!(json["vsock"]["guest_cid"], 3);
        assert_eq!(json["serial"], "/run/x/console.log");
        assert_eq!(json["initrd"], cfg.initramfs.display().to_string());
        assert_eq!(
            vmm_config(&cfg, &paths, false)["block"],
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
        let vmm = vmm_config(&config(true), &paths, false);
        assert_eq!(vmm["reflect_emulation_failures"], "on");
        let vmm = vmm_config(&config(false), &paths, false);
        assert!(vmm.get("reflect_emulation_failures").is_none(), "{vmm}");
    }
}
