//! End to end through the product path: our VMM boots our guest kernel from the read-only guest
//! image (the static agent as `/init`, built by `rootfs/build-guest-image.sh`), and the host talks
//! to the agent over vsock: once through the sandbox library with the one end-to-end driver
//! (`rust_vm_test_support::e2e`, which the `vm_run` benchmark runs too), then through
//! `rust-vm run`. On an instruction-emulating host (PVM, this project's machines) this needs
//! the emulation workarounds the `vm` back-end applies when it detects such a host
//! (docs/pvm-host-boot.md); each boot takes tens of seconds there, well under one on hardware KVM.
//!
//! The tests share one lock: two emulated guests on a 2-core host would slow each other down past
//! any sensible bound, and one at a time keeps the timings comparable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{bundle_with, run_logged, vm_command, vmm};
use rust_vm_sandbox::protocol::{AgentMode, PROTOCOL_VERSION};
use rust_vm_test_support::e2e::{self, E2e};
use rust_vm_test_support::escape;
use rust_vm_test_support::procs::assert_nothing_left;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the host or the installed guest artifacts are missing.
fn require_vm_host() {
    e2e::require_vm_host().unwrap_or_else(|e| panic!("{e}"));
}

struct Run {
    out: Output,
    log: String,
    took: Duration,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn context(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstderr:\n{}\nlog:\n{}",
            self.out.status.code(),
            self.took,
            String::from_utf8_lossy(&self.out.stderr),
            self.log
        )
    }
}

/// `rust-vm run` of a busybox bundle (its spec edited by `edit`) with the `vm` back-end and the
/// documented defaults (installed kernel, the host's agent timeout, detected workarounds) but for
/// `extra` flags.
fn run_in_vm(
    root: &Path,
    extra: &[&str],
    args: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Run {
    require_vm_host();
    let bundle = bundle_with(args, edit);
    let log = root
        .parent()
        .expect("state root has a parent")
        .join("runtime.log");
    let started = Instant::now();
    let mut cmd = vm_command(root);
    cmd.args(["--log-level", "info", "--vmm"])
        .arg(vmm())
        .args(extra);
    let out = run_logged(cmd, &log, &bundle, "e2e");
    Run {
        out,
        log: std::fs::read_to_string(&log).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// A state root inside a scratch directory (the runtime log goes next to it).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    (dir, root)
}

/// What the first container checks about its own view, in shell builtins where they do (a process
/// start costs a second or more where guest ring 0 is emulated): a block node its spec allows to
/// create but not to open, its own cgroup at its cgroup mount, its mount table, then the escape
/// probe (last: it unmounts `/`).
const CONTAINMENT_SCRIPT: &str = r#"
echo out; echo err >&2
read -r max < /sys/fs/cgroup/memory.max && echo "CGROUP-MEMORY-MAX $max"
[ -e /sys/fs/cgroup/rust-vm ] && echo CGROUP-HIERARCHY-VISIBLE
mknod /dev/probe-vda b 254 0 && echo MKNOD-ALLOWED
( exec 3</dev/probe-vda ) 2>/dev/null && echo VDA-OPENED
while read -r line; do echo "MOUNTINFO $line"; done < /proc/self/mountinfo
/escape
exit 3
"#;

/// Mount points a container of [`rust_vm_test_support::spec_json`] has: its root, the spec's
/// mounts, the masked and read-only paths. Nothing of the agent's.
const CONTAINER_MOUNTS: &[&str] = &[
    "/",
    "/proc",
    "/dev",
    "/dev/pts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/sys",
    "/sys/fs/cgroup",
];

/// The sandbox library's path, through the one end-to-end driver (also the `vm_run` benchmark's),
/// booting from the read-only guest image: the container is entered with pivot_root (its mount
/// table holds only its own mounts; neither the chroot escape nor detaching its `/` reaches
/// anything of the agent's), its device rules are enforced by the device cgroup, and its cgroup
/// mount (no cgroup namespace) shows its own cgroup, as runc binds it.
#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn agent_as_init_answers_over_vsock_and_runs_a_contained_container() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_vm_host();
    let probes = tempfile::tempdir().expect("tempdir");
    let mut run = E2e::new(&["sh", "-c", CONTAINMENT_SCRIPT]);
    run.rootfs_files = vec![("escape".into(), escape::probe(probes.path()))];
    run.edit_spec = |spec| {
        spec["linux"]["resources"] = serde_json::json!({
            "devices": [
                { "allow": false, "access": "rwm" },
                { "allow": true, "type": "b", "major": 254, "minor": 0, "access": "m" },
            ],
            "memory": { "limit": 64 << 20 },
        });
        spec["mounts"]
            .as_array_mut()
            .expect("spec mounts")
            .push(serde_json::json!({
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            }));
    };
    let report = e2e::run(&run).unwrap_or_else(|e| panic!("end-to-end run failed: {e:#}"));
    let console = &report.console;
    // The sandbox started once the agent answered `version` over the VMM's vsock socket, and it
    // kept serving on the same connection.
    assert_eq!(report.agent.protocol, PROTOCOL_VERSION);
    assert_eq!(report.agent.mode, AgentMode::Guest);
    assert_eq!(report.agent_again.agent_version, report.agent.agent_version);
    assert!(
        console.contains("VFS: Mounted root (ext4 filesystem) readonly")
            && console.contains("Run /init as init process"),
        "booted from the guest image; console:\n{console}"
    );
    assert!(
        !console.contains("Unpacking initramfs"),
        "console:\n{console}"
    );
    let out = report.stdout.as_str();
    assert_eq!(
        (out.lines().next(), report.stderr.as_str(), report.exit_code),
        (Some("out"), "err\n", 3),
        "stdout:\n{out}\nconsole:\n{console}"
    );
    // Device rules: the node could be made ("m" allowed) but not opened.
    assert!(out.contains("MKNOD-ALLOWED"), "stdout:\n{out}");
    assert!(
        !out.contains("VDA-OPENED"),
        "device cgroup not enforced; stdout:\n{out}"
    );
    // Its own cgroup at /sys/fs/cgroup, not the guest's hierarchy.
    assert!(
        out.lines()
            .any(|l| l == format!("CGROUP-MEMORY-MAX {}", 64 << 20)),
        "the cgroup mount is not the container's own cgroup; stdout:\n{out}"
    );
    assert!(!out.contains("CGROUP-HIERARCHY-VISIBLE"), "stdout:\n{out}");
    // Its own mounts only.
    let mount_points: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("MOUNTINFO "))
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    assert!(mount_points.contains(&"/"), "stdout:\n{out}");
    for point in &mount_points {
        assert!(
            CONTAINER_MOUNTS.contains(point),
            "{point} is not the container's; stdout:\n{out}"
        );
    }
    // The chroot escape climbs no higher than the container's own root (where the probe is).
    let escaped = escape::printed(out, "ESCAPED-ROOT");
    assert!(escaped.contains(&"escape"), "stdout:\n{out}");
    // Detaching the container's `/` leaves the kernel's own rootfs of the guest image boot
    // (`dev`, `root`), with nothing of the agent's on it: behind a chroot it was the agent's
    // root with every mount (devtmpfs and the VM's disks, other containers' roots).
    let uncovered = escape::printed(out, "UNCOVERED-ROOT");
    assert!(!uncovered.is_empty(), "the probe ran; stdout:\n{out}");
    for entry in &uncovered {
        assert!(
            ["dev", "root"].contains(entry),
            "uncovering reached {entry:?}; stdout:\n{out}"
        );
    }
    assert!(
        escape::printed(out, "UNCOVERED-MOUNT")
            .iter()
            .all(|m| m.starts_with("none")),
        "mounts left in the container's namespace; stdout:\n{out}"
    );
    assert_vmm_jailed(&report.vmm_confinement);
    assert_virtiofsd_sandboxed(&report.virtiofsd_confinement);
    assert!(
        !common::alive(report.vmm_pid),
        "VMM {} still running after shutdown",
        report.vmm_pid
    );
    assert!(
        !report.state_dir.exists(),
        "{} left behind",
        report.state_dir.display()
    );
    for name in e2e::milestone_names() {
        match report.milestones.get(name) {
            Some(at) => eprintln!("{name:<32} {:>8.2} s", at.as_secs_f64()),
            None => eprintln!("{name:<32} not seen"),
        }
    }
}

/// The VMM ran in its jail (docs/security.md, "Jail"): an unprivileged uid and gid of its own,
/// no capabilities, no_new_privs, its seccomp filters, namespaces of its own, a root holding
/// only its binary, libraries, kernel, guest image and the sandbox's files, `/dev/kvm` as a
/// descriptor.
fn assert_vmm_jailed(vmm: &rust_vm_test_support::procs::Confinement) {
    let uid: u32 = vmm
        .field("Uid")
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    assert!(uid >= 0x7000_0000, "{vmm:#?}");
    assert_eq!(
        vmm.field("Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}"),
        "{vmm:#?}"
    );
    assert_eq!(
        vmm.field("Gid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}"),
        "{vmm:#?}"
    );
    assert_eq!(vmm.field("Groups"), "", "{vmm:#?}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(vmm.field(caps), "0000000000000000", "{caps}: {vmm:#?}");
    }
    assert_eq!(vmm.field("NoNewPrivs"), "1", "{vmm:#?}");
    assert_eq!(vmm.field("Seccomp"), "2", "filters in force: {vmm:#?}");
    for kind in ["mnt", "pid", "ipc", "uts", "net"] {
        assert!(
            !vmm.shared_namespaces.iter().any(|k| k == kind),
            "shares the host's {kind} namespace: {vmm:#?}"
        );
    }
    let allowed = [
        "rust-vm-vmm",
        "lib",
        "lib64",
        "vmlinux",
        "guest-root.img",
        "vmm.json",
        "vsock.sock",
        "virtiofsd.sock",
        "console.log",
    ];
    assert!(
        vmm.root_entries.contains(&"vmlinux".to_string()),
        "{vmm:#?}"
    );
    for entry in &vmm.root_entries {
        assert!(
            allowed.contains(&entry.as_str()),
            "{entry} in the VMM's root: {vmm:#?}"
        );
    }
    // `/dev/kvm` came as a descriptor and went once the VM was made: nothing of the host's
    // file system is open but the VMM's log (stdout, stderr) and the null device (stdin).
    assert!(
        vmm.descriptors.iter().any(|d| d == "anon_inode:kvm-vm"),
        "{vmm:#?}"
    );
    for d in &vmm.descriptors {
        let in_jail = d.strip_prefix('/').is_some_and(|name| !name.contains('/'));
        assert!(
            in_jail
                || ["anon_inode:", "socket:", "pipe:", "/memfd:"]
                    .iter()
                    .any(|kind| d.starts_with(kind))
                || d == "/dev/null"
                || d.ends_with("/sandbox/vmm.log"),
            "descriptor {d} reaches the host: {vmm:#?}"
        );
    }
}

/// virtiofsd serves as root (files of every owner) from its own sandbox: the process that
/// serves has its seccomp filter, no_new_privs, an empty bounding set and only the file
/// capabilities (chown, dac_override, dac_read_search, fowner, fsetid, setgid, setuid, mknod,
/// setfcap: 0x880000df at most), and shares no mount, PID or network namespace with the host.
fn assert_virtiofsd_sandboxed(processes: &[rust_vm_test_support::procs::Confinement]) {
    let serving = processes
        .iter()
        .find(|p| p.field("Seccomp") == "2")
        .unwrap_or_else(|| panic!("no virtiofsd under a seccomp filter: {processes:#?}"));
    assert_eq!(serving.field("NoNewPrivs"), "1", "{serving:#?}");
    assert_eq!(serving.field("CapBnd"), "0000000000000000", "{serving:#?}");
    let effective = u64::from_str_radix(serving.field("CapEff"), 16).unwrap_or(u64::MAX);
    assert_eq!(effective & !0x8800_00df, 0, "{serving:#?}");
    for kind in ["mnt", "pid", "net"] {
        assert!(
            !serving.shared_namespaces.iter().any(|k| k == kind),
            "virtiofsd shares the host's {kind} namespace: {serving:#?}"
        );
    }
}

/// The container's script for the run below: bind mounts as podman and the kubelet make them,
/// then symlinks that try to leave the container's view of the share. Shell builtins wherever
/// they do: a process start takes a second or more where guest ring 0 is emulated.
const BIND_MOUNT_SCRIPT: &str = r#"
read -r line < /etc/hosts; echo "$line"
echo "10.0.0.9 written-by-the-container" >> /etc/hosts
read -r line < /config/key; echo "$line"
{ echo changed > /config/key; } 2>/dev/null && echo READ-ONLY-BROKEN
echo "terminated on purpose" > /dev/termination-log
read -r line < /volume/note; echo "$line"
read -r line 2>/dev/null < /volume/host-link && echo LEAK-volume-symlink
ln -s / /escape; ln -s ../../../../../../../.. /dotdot; ln -s "$SECRET" /host-link
read -r line 2>/dev/null < /host-link && echo LEAK-rootfs-symlink
read -r line 2>/dev/null < "/escape$SECRET" && echo LEAK-root-symlink
read -r line 2>/dev/null < "/dotdot$SECRET" && echo LEAK-dotdot
[ -L /dotdot/escape ] && echo dotdot-is-the-container-root
mkdir /swap
for i in 1 2 3; do
  mv /swap /swap.d; ln -s / /swap
  read -r line 2>/dev/null < "/swap$SECRET" && echo LEAK-swap
  rm /swap; mv /swap.d /swap
done
echo hello; echo err >&2; exit 3
"#;

/// `rust-vm run` on the vm back-end, booting from the initramfs fallback (`--guest-root
/// initramfs`), one boot for several checks: the agent moved its root off the kernel's rootfs so
/// that the container could pivot_root; stdout, stderr and the exit code come back through the
/// VM, the agent answered as the guest's PID 1, the guest kernel ran it;
/// the rootfs and podman/kubelet-like bind mounts came through the pod's virtio-fs share (a
/// read-write file, a read-only directory, a file the container writes that the host reads after
/// exit, a volume), no symlink reaches a host path outside the share, and nothing is left.
#[test]
#[ignore = "needs /dev/kvm and root; boots the guest kernel (~1 min)"]
fn rust_vm_run_relays_output_exit_code_and_bind_mounts_through_the_vm_and_leaves_nothing() {
    let _vm = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, root) = scratch();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("config")).unwrap();
    std::fs::create_dir_all(host.join("volume")).unwrap();
    std::fs::write(host.join("hosts"), "127.0.0.1 pod\n").unwrap();
    std::fs::write(host.join("config/key"), "value\n").unwrap();
    std::fs::write(host.join("termination-log"), "").unwrap();
    std::fs::write(host.join("volume/note"), "from a volume\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "HOST-SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, host.join("volume/host-link")).unwrap();
    let bind = |dest: &str, source: &Path, options: &[&str]| {
        serde_json::json!({"destination": dest, "type": "bind",
            "source": source, "options": options})
    };
    let mounts = [
        bind("/etc/hosts", &host.join("hosts"), &["rbind", "rw"]),
        bind("/config", &host.join("config"), &["rbind", "ro"]),
        bind(
            "/dev/termination-log",
            &host.join("termination-log"),
            &["bind"],
        ),
        bind("/volume", &host.join("volume"), &["rbind"]),
    ];
    let secret_path = secret.display().to_string();
    let run = run_in_vm(
        &root,
        &["--guest-root", "initramfs"],
        &["sh", "-c", BIND_MOUNT_SCRIPT],
        |spec| {
            // The script makes its symlinks in the rootfs.
            spec["root"]["readonly"] = false.into();
            spec["mounts"].as_array_mut().unwrap().extend(mounts);
            spec["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(format!("SECRET={secret_path}").into());
        },
    );
    assert_eq!(run.out.status.code(), Some(3), "{}", run.context());
    let stdout = run.stdout();
    assert_eq!(
        stdout,
        "127.0.0.1 pod\nvalue\nfrom a volume\ndotdot-is-the-container-root\nhello\n",
        "{}",
        run.context()
    );
    assert_eq!(
        String::from_utf8_lossy(&run.out.stderr),
        "err\n",
        "{}",
        run.context()
    );
    // What the container wrote is on the host files; the read-only one is unchanged.
    assert_eq!(
        std::fs::read_to_string(host.join("hosts")).unwrap(),
        "127.0.0.1 pod\n10.0.0.9 written-by-the-container\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("termination-log")).unwrap(),
        "terminated on purpose\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("config/key")).unwrap(),
        "value\n"
    );
    // The agent answered the version request from the guest, through the VMM's vsock device,
    // and the guest mounted the share.
    assert!(
        run.log.contains("(Guest mode, protocol 1) answered after"),
        "{}",
        run.context()
    );
    assert!(run.log.contains("virtio-fs share"), "{}", run.context());
    // The guest kernel ran it: its console (appended to --log) shows our kernel, booted from the
    // initramfs, whose root the agent left for a mount of its own.
    assert!(run.log.contains("Linux version 6.12"), "{}", run.context());
    assert!(run.log.contains("Unpacking initramfs"), "{}", run.context());
    assert!(
        run.log.contains("root moved off the initramfs"),
        "{}",
        run.context()
    );
    assert_nothing_left(&root);
    eprintln!("rust-vm run (vm back-end): {:?}", run.took);
}
