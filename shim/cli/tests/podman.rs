//! podman with `rust-vm` as its OCI runtime on the `vm` back-end: `podman --runtime <rust-vm>
//! run --rm -p HOST:CONTAINER IMAGE ...` with podman's default network and default mounts
//! (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, `/run/.containerenv` as bind mounts from
//! podman's storage, which reach the guest through the pod's virtio-fs share).
//!
//! podman runs inside a network namespace the test makes (`nsenter --net`), so its CNI bridge,
//! its port mapping rules and all traffic stay there: the test connects to the published port
//! on the bridge's address from inside that namespace and talks to the container in the VM.
//!
//! A private podman storage and run root (nothing of the host's podman is touched) and a busybox
//! image imported from a local tarball (no registry). This host needs
//! `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`: podman's defaults ask for more than its
//! hard limits allow (docs/running.md, "podman"). Needs root, podman, /dev/kvm and the installed
//! guest kernel and initramfs; boots one guest (about a minute where guest ring 0 is emulated).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rust_vm_test_support::bundle::busybox_rootfs;
use rust_vm_test_support::e2e::require_vm_host;
use rust_vm_test_support::netns::Netns;
use rust_vm_test_support::procs::processes_mentioning;

const IMAGE: &str = "localhost/rust-vm-busybox:test";
/// What podman's defaults need on this host (see the module documentation).
const HOST_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// podman's default network (its CNI bridge `cni-podman0`, 10.88.0.1/16) and the port it
/// publishes.
const BRIDGE_ADDRESS: &str = "10.88.0.1";
const PUBLISHED_PORT: u16 = 18080;

/// podman with a private storage and run root, in the network namespace `netns`.
fn podman(dir: &Path, netns: &Netns) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.path().display()))
        .arg("podman")
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .stdin(Stdio::null());
    cmd
}

fn ok(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run podman (apt-get install podman): {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
#[ignore = "needs root, podman, /dev/kvm and the guest kernel; boots the guest (~1 min)"]
fn podman_runs_a_container_in_a_microvm_with_its_default_mounts() {
    require_vm_host().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let tarball = dir.path().join("busybox.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    let netns = Netns::new("podman");
    let mut import = podman(dir.path(), &netns);
    import.arg("import").arg(&tarball).arg(IMAGE);
    ok(import, "podman import");

    // podman gives the runtime no --root: its state is under the default /run/rust-vm.
    let state_root = Path::new("/run/rust-vm");
    let entries = || {
        let mut list = rust_vm_test_support::procs::entries(state_root);
        list.sort();
        list
    };
    let sandbox_processes = || {
        rust_vm_test_support::processes()
            .into_iter()
            .filter(|(_, argv)| {
                argv.first()
                    .is_some_and(|a| a.ends_with("rust-vm-vmm") || a.ends_with("virtiofsd"))
            })
            .map(|(pid, _)| pid)
            .collect::<Vec<u32>>()
    };
    let (entries_before, processes_before) = (entries(), sandbox_processes());
    let started = Instant::now();
    let mut run = podman(dir.path(), &netns);
    let publish = format!("{PUBLISHED_PORT}:7001");
    run.arg("--runtime")
        .arg(common::rust_vm())
        .args(["run", "--rm", "-p", &publish])
        .args(HOST_ULIMITS)
        .args([
            IMAGE,
            "sh",
            "-c",
            "echo hi; test -f /run/.containerenv && echo containerenv; \
             grep -q localhost /etc/hosts && echo hosts; uname -r; \
             ip -o -4 addr show eth0 | grep -q 'inet 10.88.' && echo eth0; \
             nc -l -p 7001 -e /bin/cat",
        ]);
    let podman_run = std::thread::spawn(move || run.output().expect("podman run"));
    // The published port, from inside the namespace: podman's DNAT leads to the container's
    // echo server in the guest.
    let reply = echo_through_published_port(&netns, b"through the published port\n");
    let out = podman_run.join().expect("podman run thread");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podman run: {}\n{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["hi", "containerenv", "hosts"],
        "{stdout}\n{stderr}"
    );
    // The guest's kernel, not the host's.
    assert!(lines[3].starts_with("6.12"), "{stdout}");
    // The guest's NIC has podman's address for the container.
    assert_eq!(lines.get(4), Some(&"eth0"), "{stdout}");
    assert_eq!(reply, b"through the published port\n");

    // Nothing of the VM is left: no process naming podman's storage, no new VMM or virtiofsd,
    // no new state under /run/rust-vm.
    // conmon outlives `podman run` by its exit command (`podman container cleanup --rm`).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let left = loop {
        let left = processes_mentioning(&dir.path().display().to_string());
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let new: Vec<u32> = sandbox_processes()
        .into_iter()
        .filter(|p| !processes_before.contains(p))
        .collect();
    assert!(new.is_empty(), "VMM or virtiofsd left behind: {new:?}");
    assert_eq!(entries(), entries_before, "state left under /run/rust-vm");
    eprintln!("podman run --runtime rust-vm (vm back-end): {took:?}");
}

/// Connects (from inside `netns`, retrying while the VM boots) to the published port on the
/// bridge's address, sends `data` and reads what the echo server sends back until it closes.
fn echo_through_published_port(netns: &Netns, data: &'static [u8]) -> Vec<u8> {
    netns.run(move || {
        let target = format!("{BRIDGE_ADDRESS}:{PUBLISHED_PORT}")
            .parse()
            .expect("address");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(400),
                "nothing answered on the published port"
            );
            let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .expect("read timeout");
            // Before the guest listens, the connection may be accepted and closed at once.
            if stream.write_all(data).is_err() {
                continue;
            }
            let mut back = vec![0u8; data.len()];
            match stream.read_exact(&mut back) {
                Ok(()) => return back,
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    })
}
