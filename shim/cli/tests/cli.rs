//! `rust-vm` commands that need no container: check, spec, configuration errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::rust_vm;
use rust_vm_sandbox::host::HostKind;
use rust_vm_sandbox::RuntimeConfig;

fn rust_vm_cmd(args: &[&str]) -> std::process::Output {
    Command::new(rust_vm())
        .args(["--config", "/dev/null"])
        .args(args)
        .output()
        .expect("rust-vm")
}

#[test]
#[ignore = "needs root and /dev/kvm"]
fn check_reports_each_requirement_and_fails_on_a_missing_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("guest-root.img");
    std::fs::write(&image, b"x").expect("write");
    let root = dir.path().join("state");
    let out = Command::new(rust_vm())
        .args(["--config", "/dev/null", "--kernel", "/nonexistent/vmlinux"])
        .arg("--guest-image")
        .arg(&image)
        .arg("--root")
        .arg(&root)
        .arg("check")
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for item in [
        "kvm",
        "virtualization",
        "kernel",
        "guest image",
        "vmm",
        "virtiofsd",
        "agent",
        "mkfs.ext4",
        "permissions",
        "state root",
        "seccomp",
        "jail",
        "host cgroup",
        "backend",
    ] {
        assert!(
            text.lines().any(|l| l[5..].starts_with(item)),
            "no {item} line in:\n{text}"
        );
    }
    let kernel = text
        .lines()
        .find(|l| l[5..].starts_with("kernel"))
        .expect("kernel line");
    assert!(kernel.starts_with("FAIL"), "{kernel}");
    assert!(kernel.contains("scripts/setup.sh"), "{kernel}");
    assert!(text.contains("ok   kvm"), "{text}");
    let virt = text
        .lines()
        .find(|l| l.contains("virtualization"))
        .expect("virt line");
    assert!(
        virt.contains("hardware") || virt.contains("instruction-emulating"),
        "{virt}"
    );
}

/// `check` and the runtime apply one rule: on this PVM host both say "instruction-emulating",
/// and the workarounds `check` announces are the ones a sandbox gets.
#[test]
fn check_and_the_runtime_agree_on_the_host_kind() {
    let host = HostKind::detect();
    let out = rust_vm_cmd(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let virt = text
        .lines()
        .find(|l| l.contains("virtualization"))
        .unwrap_or_else(|| panic!("no virtualization line in:\n{text}"));
    assert!(virt.contains(&host.to_string()), "{virt} (host: {host})");
    let sandbox = RuntimeConfig::default().sandbox_config("x", Path::new("/run/x"));
    assert_eq!(sandbox.emulating_host, host.emulates_guest_ring0());
    let announced = virt.contains("applies the emulating-host workarounds");
    assert_eq!(announced, sandbox.emulating_host, "{virt}");
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(host, HostKind::Pvm);
        assert!(virt.contains("instruction-emulating"), "{virt}");
    }
}

#[test]
fn spec_writes_a_loadable_default_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().display().to_string();
    let out = rust_vm_cmd(&["spec", "--bundle", &bundle]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("config.json")).expect("config.json"),
    )
    .expect("json");
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(spec["root"]["path"], "rootfs");
    let again = rust_vm_cmd(&["spec", "--bundle", &bundle]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// `rust-vm --config <config> --root <root> list`, which must fail; returns its stderr.
fn list_failing_with(config: &std::path::Path, root: &std::path::Path) -> String {
    let out = Command::new(rust_vm())
        .arg("--config")
        .arg(config)
        .args(["--root", &root.display().to_string(), "list"])
        .output()
        .expect("rust-vm");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "vcpu = 2\n").expect("write");
    let err = list_failing_with(&config, dir.path());
    assert!(err.contains("config.toml") && err.contains("vcpu"), "{err}");
    // The cause is printed once, not once per link of the error chain.
    assert_eq!(err.matches("unknown field `vcpu`").count(), 1, "{err}");
    std::fs::write(&config, "mem_mib = \"lots\"\n").expect("write");
    let err = list_failing_with(&config, dir.path());
    assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");
    assert_eq!(err.matches("mem_mib = \"lots\"").count(), 1, "{err}");
    let out = Command::new(rust_vm())
        .args(["--config", "/nonexistent/config.toml", "list"])
        .output()
        .expect("rust-vm");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.toml"));
    let out = rust_vm_cmd(&["--backend", "qemu", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("qemu"));
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "backend = \"namespaces\"\n").expect("write");
    let check = |extra: &[&str]| -> String {
        let out = Command::new(rust_vm())
            .arg("--config")
            .arg(&config)
            .args(["--root", &dir.path().join("state").display().to_string()])
            .args(extra)
            .arg("check")
            .output()
            .expect("check");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("backend"))
            .unwrap_or_else(|| panic!("no backend line in:\n{text}"))
            .to_string()
    };
    assert!(check(&[]).contains("namespaces (tests and debugging only"));
    assert!(check(&["--backend", "vm"]).ends_with("backend        vm"));
}
