//! The `vm` back-end (the product) through containerd on this host: the shim starts our VMM,
//! which boots our guest kernel with the agent as `/init` (on a PVM host the back-end applies
//! the emulating-host kernel options and agent timeout by itself, docs/pvm-host-boot.md).
//!
//! * End to end: `ctr run` of busybox in a microVM prints its output and returns its exit code;
//!   two containers of one pod run in one VM from the pod's virtio-fs share, with a volume they
//!   share and CRI-shaped file mounts; virtiofsd killed ends the pod; afterwards nothing is left
//!   (VMM, virtiofsd, shim, mounts, sockets, sandbox state). One guest boot per test (~30 s on a
//!   PVM host with an Intel CPU, a few minutes on an AMD one).
//! * Failure paths, made deterministic with a stand-in `/init` that never answers: `ctr run`
//!   fails within a tiny `agent_timeout_secs` with the documented error quoting the guest
//!   console; a shim killed with SIGKILL while its VM boots takes the VMM along.
//!
//! Needs root, /dev/kvm, containerd, umoci, busybox-static, a C compiler, the guest kernel and
//! guest image (`guest-kernel/build.sh`, `rootfs/build-guest-image.sh`: /var/lib/rust-vm/). A
//! missing prerequisite fails the test, naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Containerd, GUEST_STEP, IMAGE, NO_CPU_SHARES, RUNTIME};
// The stand-in `/init` never answers, so the failure paths do not depend on how far or fast
// the guest boots.
use rust_vm_test_support::guest_image;

const KERNEL: &str = "/var/lib/rust-vm/vmlinux";
const GUEST_IMAGE: &str = "/var/lib/rust-vm/guest-root.img";
const AGENT_TIMEOUT_SECS: u64 = 6;

#[test]
#[ignore = "needs root, /dev/kvm, containerd and the guest kernel (guest-kernel/build.sh)"]
fn vm_backend_boots_the_guest_then_fails_cleanly() {
    let (_serial, ctd, config) = with_mute_guest(
        "vm",
        &format!("agent_timeout_secs = {AGENT_TIMEOUT_SECS}\n"),
    );

    // The configuration reaches the shim as runtime options (runtimeoptions.v1 ConfigPath).
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    let config_arg = config.to_string_lossy().into_owned();
    argv.extend_from_slice(&[
        "--runtime-config-path",
        &config_arg,
        IMAGE,
        "vm1",
        "echo",
        "hi",
    ]);
    let started = Instant::now();
    let out = ctd.ctr(&argv);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(
        !out.status.success(),
        "a VM on this host cannot run the container"
    );
    assert!(
        took < Duration::from_secs(AGENT_TIMEOUT_SECS + 20),
        "ctr run took {took:?} with agent_timeout_secs = {AGENT_TIMEOUT_SECS}"
    );
    let state = common::sandbox_state_dir("default", "vm1");
    let timed_out = stderr.contains(&format!(
        "the agent did not answer on vsock-uds:{}",
        state.display()
    )) && stderr.contains(&format!("within {AGENT_TIMEOUT_SECS}s"));
    let vmm_died = stderr.contains("before the agent answered");
    assert!(timed_out || vmm_died, "unexpected error:\n{stderr}");
    // The guest console is quoted, and it is our kernel's log.
    assert!(
        stderr.contains("console.log ---"),
        "no console tail:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[    ") && l.contains("] ")),
        "no kernel log lines in the console tail:\n{stderr}"
    );

    assert_vm_clean(&ctd, &state, &[], &[]);
    let _ = ctd.ctr(&["containers", "rm", "vm1"]);
}

#[test]
#[ignore = "needs root, /dev/kvm, containerd and the guest kernel (guest-kernel/build.sh)"]
fn killed_shim_takes_its_vmm_along() {
    // Long enough for the test to find the booting VMM and kill the shim under it.
    let (_serial, ctd, config) = with_mute_guest("vmkill", "agent_timeout_secs = 60\n");
    let mut run = Command::new("ctr")
        .arg("--address")
        .arg(&ctd.socket)
        .args(["run", "--rm", "--runtime", RUNTIME])
        .args(NO_CPU_SHARES)
        .arg("--runtime-config-path")
        .arg(&config)
        .args([IMAGE, "vmk", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");

    // The sandbox's VMM is up when a process names the sandbox's state directory.
    let state = common::sandbox_state_dir("default", "vmk");
    let state_text = state.to_string_lossy().into_owned();
    let vmm_pids = || rust_vm_test_support::vmm_pids(&state_text);
    let deadline = Instant::now() + Duration::from_secs(30);
    let vmms = loop {
        let found = vmm_pids();
        if !found.is_empty() {
            break found;
        }
        assert!(Instant::now() < deadline, "no VMM started for the sandbox");
        std::thread::sleep(Duration::from_millis(50));
    };
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill(2) of the shim this test started through containerd.
    unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) };

    // The VMM dies with the shim (parent-death signal), and `ctr run` fails.
    let status = run.wait().expect("wait for ctr");
    assert!(!status.success(), "ctr run succeeded without a shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = vmms.iter().copied().filter(|&p| common::alive(p)).collect();
        let shims = ctd.shim_pids();
        let mounts = ctd.mounts();
        if left.is_empty() && shims.is_empty() && mounts.is_empty() && !state.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: VMM {left:?}, shims {shims:?}, mounts {mounts:?}, state {}\n{}",
            state.exists(),
            common::tail(&ctd.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ctd.ctr(&["containers", "rm", "vmk"]);
}

/// Fails (never skips) when the host lacks what a guest boot needs.
fn require_vm_host() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm missing: these tests boot a microVM"
    );
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    assert!(
        Path::new(GUEST_IMAGE).is_file(),
        "{GUEST_IMAGE} missing: run rootfs/build-guest-image.sh"
    );
}

/// A private containerd (tests run one at a time) whose rust-vm configuration boots the real
/// guest kernel with a stand-in `/init` that never answers: deterministic failure paths.
fn with_mute_guest(
    name: &str,
    extra_config: &str,
) -> (std::sync::MutexGuard<'static, ()>, Containerd, PathBuf) {
    assert!(
        Path::new(KERNEL).is_file(),
        "{KERNEL} missing: run guest-kernel/build.sh"
    );
    let serial = common::serial();
    let ctd = Containerd::start(name);
    let config = ctd.write_vm_config(KERNEL, &guest_image::stand_in(&ctd.dir), extra_config);
    (serial, ctd, config)
}

/// Live VMM processes of a sandbox: our VMM binary naming the sandbox's state directory.
fn vmm_pids(state: &Path) -> Vec<u32> {
    rust_vm_test_support::vmm_pids(&state.to_string_lossy())
}

/// Everything a VM sandbox had is gone: VMM processes (any naming the state directory),
/// shims, mounts under containerd's directories, the shim's socket, containerd's bundle of
/// each task, and the sandbox state directory (disk images, vsock socket, console log).
fn assert_vm_clean(ctd: &Containerd, state: &Path, sockets: &[PathBuf], ids: &[&str]) {
    let state_text = state.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let vmms: Vec<u32> = common::processes()
            .into_iter()
            .filter(|(pid, argv)| {
                common::alive(*pid) && argv.iter().any(|a| a.contains(&state_text))
            })
            .map(|(pid, _)| pid)
            .collect();
        let shims = ctd.shim_pids();
        let mounts = ctd.mounts();
        let sockets_left: Vec<&PathBuf> = sockets.iter().filter(|s| s.exists()).collect();
        let bundles: Vec<PathBuf> = ids
            .iter()
            .map(|id| ctd.bundle(id))
            .filter(|b| b.exists())
            .collect();
        if vmms.is_empty()
            && shims.is_empty()
            && mounts.is_empty()
            && sockets_left.is_empty()
            && bundles.is_empty()
            && !state.exists()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: VMM {vmms:?}, shims {shims:?}, mounts {mounts:?}, sockets \
             {sockets_left:?}, bundles {bundles:?}, state {} {:?}\n{}",
            state.display(),
            std::fs::read_dir(state)
                .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
                .ok(),
            common::tail(&ctd.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ctr run --rm` of busybox in a microVM: (exit code, stdout, stderr, time taken). The
/// shim's socket is read from the bundle while the task runs, for the leak check.
fn ctr_run_in_vm(
    ctd: &Containerd,
    id: &str,
    args: &[&str],
) -> (Option<i32>, String, String, Duration) {
    let config = ctd.vm_backend_config();
    let config_arg = config.to_string_lossy().into_owned();
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    argv.extend_from_slice(&["--runtime-config-path", &config_arg, IMAGE, id]);
    argv.extend_from_slice(args);
    let started = Instant::now();
    let out = ctd.ctr(&argv);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// The shim socket a containerd shim of this containerd binds for a sandbox id: containerd
/// records it in the bundle, which `--rm` removes, so it is taken from the shim's command line.
fn shim_sockets(ctd: &Containerd) -> Vec<PathBuf> {
    let pids = ctd.shim_pids();
    common::processes()
        .into_iter()
        .filter(|(pid, _)| pids.contains(pid))
        .filter_map(|(_, argv)| {
            let at = argv.iter().position(|a| a == "-socket")?;
            let addr = argv.get(at + 1)?;
            Some(PathBuf::from(addr.trim_start_matches("unix://")))
        })
        .collect()
}

/// One boot: `ctr run --rm` relays stdout, stderr and the exit code through the VM, one shim
/// serves it, and nothing is left.
#[test]
#[ignore = "needs root, /dev/kvm and containerd; boots the guest (~30 s)"]
fn vm_backend_runs_a_container_returns_its_exit_code_and_leaves_nothing() {
    require_vm_host();
    let _serial = common::serial();
    let ctd = Containerd::start("vmecho");
    let state = common::sandbox_state_dir("default", "vmecho");
    // Watch for the shim's socket while `ctr run` is in flight.
    let watching = std::sync::atomic::AtomicBool::new(true);
    let (code, stdout, stderr, took, sockets) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen: Vec<PathBuf> = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for socket in shim_sockets(&ctd) {
                    if !seen.contains(&socket) {
                        seen.push(socket);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        });
        let (code, stdout, stderr, took) = ctr_run_in_vm(
            &ctd,
            "vmecho",
            &["sh", "-c", "echo hi; echo err >&2; exit 3"],
        );
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let sockets = watcher.join().expect("socket watcher");
        (code, stdout, stderr, took, sockets)
    });
    let context = || {
        format!(
            "exit {code:?} after {took:?}\nstderr:\n{stderr}\n--- containerd log tail ---\n{}",
            common::tail(&ctd.log(), 30)
        )
    };
    assert_eq!(code, Some(3), "{}", context());
    assert_eq!(stdout, "hi\n", "{}", context());
    assert_eq!(stderr, "err\n", "{}", context());
    assert_eq!(
        sockets.len(),
        1,
        "one shim socket: {sockets:?}\n{}",
        context()
    );
    assert_vm_clean(&ctd, &state, &sockets, &["vmecho"]);
    // `--rm` removed the container; the snapshot went with it.
    let containers = ctd.ctr_ok(&["containers", "ls", "-q"]);
    assert!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
    let snapshots = ctd.ctr_ok(&["snapshots", "ls"]);
    assert!(
        !snapshots.contains("vmecho"),
        "snapshot left behind:\n{snapshots}"
    );
    eprintln!("ctr run (vm back-end) sh -c 'echo hi; echo err >&2; exit 3': {took:?}");
}

/// `ctr run -d` of `sleep 1000` in the vm back-end with the given CRI annotations and bind
/// mounts (`(host source, destination, options)`).
fn run_detached_in_vm(
    ctd: &Containerd,
    config: &Path,
    id: &str,
    annotations: &[&str],
    binds: &[(&Path, &str, &str)],
) {
    let config_arg = config.to_string_lossy().into_owned();
    let mut argv = vec!["run", "-d", "--runtime", RUNTIME];
    argv.extend_from_slice(&NO_CPU_SHARES);
    argv.extend_from_slice(&["--runtime-config-path", &config_arg]);
    for a in annotations {
        argv.push("--annotation");
        argv.push(a);
    }
    let mounts: Vec<String> = binds
        .iter()
        .map(|(src, dst, options)| {
            format!(
                "type=bind,src={},dst={dst},options={options}",
                src.display()
            )
        })
        .collect();
    for mount in &mounts {
        argv.push("--mount");
        argv.push(mount);
    }
    argv.extend_from_slice(&[IMAGE, id, "sleep", "1000"]);
    ctd.ctr_ok(&argv);
    ctd.wait_for_status(id, Some("RUNNING"), GUEST_STEP);
}

fn kill_and_delete(ctd: &Containerd, id: &str) {
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    ctd.wait_for_status(id, Some("STOPPED"), GUEST_STEP);
    let deleted = ctd.ctr(&["task", "delete", id]);
    let stderr = String::from_utf8_lossy(&deleted.stderr);
    assert!(deleted.status.success(), "task delete {id}: {stderr}");
    assert!(
        stderr.contains("exit code 137"),
        "{id} not killed by SIGKILL: {stderr}"
    );
    ctd.ctr_ok(&["containers", "rm", id]);
}

/// A pod on the vm back-end, one boot: two containers in one VMM, the second joining after the
/// first started, both from the pod's virtio-fs share; a volume both write; CRI-shaped file mounts
/// (a read-only hosts file, a termination log written in the guest and read on the host); then
/// virtiofsd killed with SIGKILL ends the pod, reported exited, and nothing is left.
#[test]
#[ignore = "needs root, /dev/kvm and containerd; boots the guest (~30 s)"]
fn vm_backend_pod_containers_share_one_vmm() {
    require_vm_host();
    let _serial = common::serial();
    let ctd = Containerd::start("vmpod");
    let config = ctd.vm_backend_config();
    let state = common::sandbox_state_dir("default", "vmpod");
    let host = ctd.dir.join("host");
    std::fs::create_dir_all(host.join("volume")).expect("mkdir volume");
    std::fs::write(host.join("hosts"), "127.0.0.1 localhost\n10.1.0.5 vmapp\n").expect("hosts");
    std::fs::write(host.join("termination-log"), "").expect("termination-log");
    let volume = host.join("volume");
    let started = Instant::now();
    run_detached_in_vm(
        &ctd,
        &config,
        "vmpod",
        &[
            "io.kubernetes.cri.container-type=sandbox",
            "io.kubernetes.cri.sandbox-id=vmpod",
        ],
        &[(&volume, "/shared", "rbind:rw")],
    );
    let booted = started.elapsed();
    let vmms = vmm_pids(&state);
    assert_eq!(vmms.len(), 1, "the pod's VMM: {vmms:?}");
    let joined = Instant::now();
    run_detached_in_vm(
        &ctd,
        &config,
        "vmapp",
        &[
            "io.kubernetes.cri.container-type=container",
            "io.kubernetes.cri.sandbox-id=vmpod",
        ],
        &[
            (&volume, "/shared", "rbind:rw"),
            (&host.join("hosts"), "/etc/hosts", "rbind:ro"),
            (
                &host.join("termination-log"),
                "/dev/termination-log",
                "rbind:rw",
            ),
        ],
    );
    let join_took = joined.elapsed();
    assert_eq!(vmm_pids(&state), vmms, "a joining container started a VMM");
    let socket = ctd.shim_socket("vmpod");
    assert_eq!(ctd.shim_socket("vmapp"), socket, "vmapp has another shim");
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod, found {shims:?}");
    // A listing of the running VMM's fds: containerd's task socket is not among them.
    common::assert_task_socket_not_inherited(shims[0], &vmms);

    // Both run under the guest's kernel, not the host's, and see their own rootfs.
    let host_release = String::from_utf8_lossy(
        &Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname -r")
            .stdout,
    )
    .into_owned();
    for id in ["vmpod", "vmapp"] {
        let release = ctd.ctr_ok(&["task", "exec", "--exec-id", "uname", id, "uname", "-r"]);
        assert!(
            release.starts_with("6.12") && release != host_release,
            "{id} runs on kernel {release:?} (host {host_release:?})"
        );
        let ls = ctd.ctr_ok(&["task", "exec", "--exec-id", "ls", id, "ls", "/bin/busybox"]);
        assert_eq!(ls, "/bin/busybox\n", "{id}");
    }
    // Both containers' processes are in the one VM: the pod's agent lists them by pid there.
    let ps = ctd.ctr_ok(&["task", "ps", "vmapp"]);
    assert!(ps.lines().count() >= 2, "no process of vmapp:\n{ps}");

    // The volume is one directory for both members and the host.
    let exec = |id: &str, name: &str, script: &str| {
        ctd.ctr_ok(&["task", "exec", "--exec-id", name, id, "sh", "-c", script])
    };
    exec("vmpod", "w", "echo from-the-pod > /shared/note");
    assert_eq!(exec("vmapp", "r", "cat /shared/note"), "from-the-pod\n");
    exec("vmapp", "w2", "echo from-the-app >> /shared/note");
    assert_eq!(
        std::fs::read_to_string(volume.join("note")).expect("note"),
        "from-the-pod\nfrom-the-app\n"
    );
    // CRI-shaped file mounts: the hosts file read-only, the termination log read on the host.
    assert_eq!(
        exec(
            "vmapp",
            "hosts",
            "cat /etc/hosts; echo x >> /etc/hosts || echo read-only"
        ),
        "127.0.0.1 localhost\n10.1.0.5 vmapp\nread-only\n"
    );
    exec(
        "vmapp",
        "t",
        "echo 'exited on purpose' > /dev/termination-log",
    );

    kill_and_delete(&ctd, "vmapp");
    assert_eq!(
        std::fs::read_to_string(host.join("termination-log")).expect("termination-log"),
        "exited on purpose\n"
    );
    assert_eq!(
        vmm_pids(&state),
        vmms,
        "the VMM must stay while the pod runs"
    );
    assert_eq!(ctd.task_status("vmpod").as_deref(), Some("RUNNING"));

    // virtiofsd killed: the VM ends with it and the pod's container is reported exited.
    let virtiofsd = common::processes()
        .into_iter()
        .find(|(pid, argv)| {
            common::alive(*pid)
                && argv.first().is_some_and(|a| a.ends_with("virtiofsd"))
                && argv.iter().any(|a| a.contains(&*state.to_string_lossy()))
        })
        .map(|(pid, _)| pid)
        .expect("the pod's virtiofsd");
    // SAFETY: kill(2) of the pod's virtiofsd, found by its shared directory.
    unsafe { libc::kill(virtiofsd as i32, libc::SIGKILL) };
    ctd.wait_for_status("vmpod", Some("STOPPED"), GUEST_STEP);
    ctd.ctr_ok(&["task", "delete", "vmpod"]);
    ctd.ctr_ok(&["containers", "rm", "vmpod"]);
    assert_vm_clean(&ctd, &state, &[socket], &["vmpod", "vmapp"]);
    eprintln!("pod on the vm back-end: sandbox running after {booted:?}, second container joined in {join_took:?}");
}
