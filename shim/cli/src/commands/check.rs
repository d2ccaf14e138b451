//! `check`: can this host run rust-vm containers? One line per item, with what to do.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Result;
use rust_vm_sandbox::config::resolve_binary;
use rust_vm_sandbox::host::HostKind;
use rust_vm_sandbox::RuntimeConfig;

use crate::Global;

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Level {
    Ok,
    Warn,
    Fail,
}

fn line(level: Level, item: &str, text: &str) -> Level {
    let tag = match level {
        Level::Ok => "ok  ",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
    };
    println!("{tag} {item:<14} {text}");
    level
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;

pub fn check(g: &Global) -> Result<i32> {
    let cfg = g.runtime_config()?;
    let mut worst = Level::Ok;
    let mut note = |l: Level| worst = worst.max(l);

    note(
        match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
            Ok(f) => {
                // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
                let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
                if v == 12 {
                    line(
                        Level::Ok,
                        "kvm",
                        "/dev/kvm opens read-write, KVM API version 12",
                    )
                } else {
                    line(
                        Level::Fail,
                        "kvm",
                        &format!("/dev/kvm answers API version {v}, expected 12"),
                    )
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => line(
                Level::Fail,
                "kvm",
                "/dev/kvm missing: load kvm_intel or kvm_amd (hardware virtualization) or kvm_pvm",
            ),
            Err(e) => line(
                Level::Fail,
                "kvm",
                &format!("/dev/kvm: {e}: run as root or add the user to the kvm group"),
            ),
        },
    );

    note(virtualization_line(&HostKind::detect(), &cfg));
    let file_check = |item: &str, path: &Path, hint: &str| -> Level {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => line(Level::Ok, item, &path.display().to_string()),
            Ok(_) => line(
                Level::Fail,
                item,
                &format!("{} is not a file: {hint}", path.display()),
            ),
            Err(e) => line(
                Level::Fail,
                item,
                &format!("{}: {e}: {hint}", path.display()),
            ),
        }
    };
    note(file_check(
        "kernel",
        &cfg.kernel,
        "run scripts/setup.sh or set `kernel` in the config",
    ));
    // The guest's root as configured: the read-only image (default) or the initramfs.
    note(match cfg.guest_root {
        rust_vm_sandbox::GuestRoot::Image => file_check(
            "guest image",
            &cfg.guest_image,
            "run rootfs/build-guest-image.sh (scripts/setup.sh does) or set `guest_image` in the config",
        ),
        rust_vm_sandbox::GuestRoot::Initramfs => file_check(
            "initramfs",
            &cfg.initramfs,
            "run rootfs/build-initramfs.sh or set `initramfs` in the config",
        ),
    });
    let vmm = resolve_binary(&cfg.vmm);
    note(exe_check(
        "vmm",
        &vmm,
        "cargo build --release -p rust-vm-vmm, or set `vmm` in the config",
    ));
    let vm = cfg.backend == rust_vm_sandbox::Backend::Vm;
    let virtiofsd = exe_check(
        "virtiofsd",
        &cfg.virtiofsd,
        "run scripts/setup.sh (installs it) or set `virtiofsd` in the config",
    );
    // The vm back-end's pod share needs it; the namespaces back-end does not.
    note(if vm {
        virtiofsd
    } else {
        virtiofsd.min(Level::Warn)
    });
    let agent = resolve_binary(&cfg.agent);
    let agent_level = exe_check(
        "agent",
        &agent,
        "needed by the namespaces back-end only: cargo build -p rust-vm-agent",
    );
    note(if cfg.backend == rust_vm_sandbox::Backend::Namespaces {
        agent_level
    } else {
        agent_level.min(Level::Warn)
    });
    // Only `rootfs = "block"` copies a rootfs into an ext4 image.
    let block = vm && cfg.rootfs == rust_vm_sandbox::RootfsMode::Block;
    let mkfs = match which("mkfs.ext4") {
        Some(p) => line(
            Level::Ok,
            "mkfs.ext4",
            &format!("{} (rootfs images, rootfs = \"block\")", p.display()),
        ),
        None => line(
            if block { Level::Fail } else { Level::Warn },
            "mkfs.ext4",
            "missing: apt-get install e2fsprogs (needed with rootfs = \"block\")",
        ),
    };
    note(mkfs);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    note(if root {
        line(Level::Ok, "permissions", "running as root")
    } else {
        line(
            Level::Fail,
            "permissions",
            "not root: rust-vm needs root for namespaces, mounts and the state root",
        )
    });
    note(match std::fs::create_dir_all(&g.root) {
        Ok(()) => line(
            Level::Ok,
            "state root",
            &format!("{} is writable", g.root.display()),
        ),
        Err(e) => line(
            Level::Fail,
            "state root",
            &format!("{}: {e}: pick another with --root", g.root.display()),
        ),
    });
    note(seccomp_line());
    note(jail_line(&cfg));
    note(host_cgroup_line(&cfg));
    line(
        Level::Ok,
        "backend",
        &format!(
            "{}{}",
            cfg.backend,
            if cfg.backend == rust_vm_sandbox::Backend::Namespaces {
                " (tests and debugging only: no VM isolation)"
            } else {
                ""
            }
        ),
    );
    Ok(if worst == Level::Fail { 1 } else { 0 })
}

/// The VMM confines each thread with a seccomp filter whose action kills the process: the
/// kernel must have filters and that action (Linux 4.14).
fn seccomp_line() -> Level {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_ulong = 2;
    const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
    let action = SECCOMP_RET_KILL_PROCESS;
    // SAFETY: the kernel only reads the u32 we point at.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if rc == 0 {
        line(
            Level::Ok,
            "seccomp",
            "in force: each VMM thread is confined to its system calls, anything else kills the \
             VMM (the VMM's --seccomp off is for debugging only)",
        )
    } else {
        line(
            Level::Fail,
            "seccomp",
            &format!(
                "this kernel cannot kill a process from a seccomp filter ({}): the VMM would not \
                 start",
                std::io::Error::last_os_error()
            ),
        )
    }
}

/// Each VMM starts in its jail (rust_vm_sandbox::jail): its binary and libraries, the guest
/// kernel and the guest image must be readable by the jail's unprivileged uid.
fn jail_line(cfg: &RuntimeConfig) -> Level {
    use rust_vm_sandbox::config::resolve_binary;
    use rust_vm_sandbox::jail::{Ids, Jail};
    if !cfg.jail {
        return line(
            Level::Warn,
            "jail",
            "off (jail = false): each VMM runs as root with the host's view of files, processes \
             and devices",
        );
    }
    let ids = Ids::for_sandbox("check", cfg.jail_id_base);
    let mut jail = Jail::new(Path::new("/nonexistent"), ids);
    let mut checks = vec![jail
        .bind_executable(&resolve_binary(&cfg.vmm), "rust-vm-vmm")
        .map(|_| ())];
    checks.push(
        jail.bind_read_only("guest kernel", &cfg.kernel, "vmlinux")
            .map(|_| ()),
    );
    let root = match cfg.guest_root {
        rust_vm_sandbox::GuestRoot::Image => ("guest image", &cfg.guest_image),
        rust_vm_sandbox::GuestRoot::Initramfs => ("guest initramfs", &cfg.initramfs),
    };
    checks.push(jail.bind_read_only(root.0, root.1, "root").map(|_| ()));
    match checks.into_iter().find_map(Result::err) {
        None => line(
            Level::Ok,
            "jail",
            &format!(
                "in force: each VMM in its sandbox's `vm` directory as its root, in new mount, PID, \
                 IPC, UTS and network namespaces, as a uid/gid of its own from {} up, no \
                 capabilities, /dev/kvm and the tap as descriptors",
                cfg.jail_id_base
            ),
        ),
        Some(e) => line(Level::Fail, "jail", &rust_vm_sandbox::Chain(&e).to_string()),
    }
}

/// Each sandbox's host processes run in `rust-vm/ID-HASH` under the memory, cpu and pids
/// controllers (rust_vm_sandbox::host_cgroup): they must be there.
fn host_cgroup_line(cfg: &RuntimeConfig) -> Level {
    use rust_vm_sandbox::host_cgroup::{
        is_unified, missing_controllers, CGROUP_ROOT, MEMORY_OVERHEAD_MIB,
    };
    if !cfg.host_cgroup {
        return line(
            Level::Warn,
            "host cgroup",
            "off (host_cgroup = false): a sandbox's VMM and virtiofsd are not bounded",
        );
    }
    let root = Path::new(CGROUP_ROOT);
    let missing = match missing_controllers(root) {
        Ok(missing) => missing,
        Err(e) => {
            return line(
                Level::Fail,
                "host cgroup",
                &rust_vm_sandbox::Chain(&e).to_string(),
            )
        }
    };
    if missing.is_empty() {
        line(
            Level::Ok,
            "host cgroup",
            &format!(
                "in force ({}): each sandbox's VMM and virtiofsd in {CGROUP_ROOT}/.../rust-vm/ID-HASH, \
                 memory = guest RAM + {MEMORY_OVERHEAD_MIB} MiB, CPU = vCPUs + 1",
                if is_unified(root) { "cgroup v2" } else { "cgroup v1" }
            ),
        )
    } else {
        line(
            Level::Fail,
            "host cgroup",
            &format!(
                "no {} controller under {CGROUP_ROOT}: sandboxes would not start (host_cgroup = false turns the bound off)",
                missing.join(", ")
            ),
        )
    }
}

fn exe_check(item: &str, path: &Path, hint: &str) -> Level {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            line(Level::Ok, item, &path.display().to_string())
        }
        _ => line(
            Level::Fail,
            item,
            &format!("{} not found or not executable: {hint}", path.display()),
        ),
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let found = resolve_binary(Path::new(name));
    found.is_absolute().then_some(found)
}

/// The host's kind by the rule the runtime and the VMM apply ([`HostKind`]), and whether the
/// emulation workarounds will be used.
fn virtualization_line(host: &HostKind, cfg: &RuntimeConfig) -> Level {
    let workarounds = cfg.emulation_workarounds.resolve(host);
    let applied = if workarounds.apply {
        "the runtime applies the emulating-host workarounds (docs/pvm-host-boot.md)"
    } else {
        "the runtime applies no emulating-host workarounds"
    };
    match host {
        HostKind::Hardware { .. } | HostKind::Unknown => {
            line(Level::Ok, "virtualization", &format!("{host}; {applied}"))
        }
        HostKind::Pvm => line(
            Level::Warn,
            "virtualization",
            &format!(
                "{host}: guest ring 0 of our kernel is emulated, it boots in tens of seconds \
                 (a PVM guest kernel, CONFIG_PVM_GUEST, would run at native speed); {applied}"
            ),
        ),
        HostKind::NoHardwareVirtualization => line(
            Level::Fail,
            "virtualization",
            &format!(
                "{host} and no kvm_pvm module: enable nested virtualization or load kvm_pvm; \
                 {applied}"
            ),
        ),
    }
}
