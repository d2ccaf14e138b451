//! A private containerd for tests and the benchmark: its own root, state and sockets, a PATH
//! that finds our shim, a rust-vm config selecting the `namespaces` back-end, and a busybox
//! image built locally (no registry is reachable) from Debian's busybox-static with umoci.
//!
//! Everything it starts is stopped on drop: tasks, shims, containerd; mounts under its
//! directory are undone and the directory removed.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub mod net;

/// How long one step inside a guest (a process starting, or dying of a signal, and its exit
/// reaching containerd) may take on the vm back-end: guest ring 0 is instruction-emulated on this
/// project's machines, about four times slower on the AMD ones than on the Intel ones, where such
/// a step took a few seconds (once over 20 s on AMD under build load).
pub const GUEST_STEP: std::time::Duration = std::time::Duration::from_secs(180);
pub const RUNTIME: &str = "io.containerd.rust-vm.v2";
pub const RUNC: &str = "io.containerd.runc.v2";
pub const IMAGE: &str = "rust-vm.test/busybox:latest";
/// The same image without a command: a container of it has no `process.args`.
pub const IMAGE_NO_CMD: &str = "rust-vm.test/busybox:nocmd";
const BUSYBOX: &str = "/bin/busybox";

pub fn shim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-rust-vm-v2"))
}

/// ctr's default spec asks for `cpu.shares` 1024. The `namespaces` back-end runs the agent
/// without cgroups on this cgroup-v1 host, and that agent refuses any resource setting by name,
/// so test containers are created without one (the VM's agent has cgroup v2).
pub const NO_CPU_SHARES: [&str; 2] = ["--cpu-shares", "0"];

/// The agent binary: `$RUST_VM_TEST_AGENT`, or the one next to the shim.
pub fn agent_binary() -> PathBuf {
    if let Some(agent) = std::env::var_os("RUST_VM_TEST_AGENT") {
        return PathBuf::from(agent);
    }
    workspace_binary("rust-vm-agent", "rust-vm-agent")
}

pub use rust_vm_test_support::procs::{alive, descendants, parent_pid, processes};
pub use rust_vm_test_support::{mounts_under, workspace_binary};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds an OCI image archive holding busybox and its applet links; tags `latest` (command
/// `sh`) and `nocmd` (no command).
pub fn build_busybox_image(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    let layout = dir.join("layout");
    let bundle = dir.join("unpacked");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image("latest")]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image("latest")])
        .arg(&bundle));
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    let list = run(Command::new(BUSYBOX).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).expect("applet link");
        }
    }
    for d in ["dev", "proc", "sys", "tmp", "etc", "root"] {
        fs::create_dir_all(bundle.join("rootfs").join(d)).expect("mkdir");
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image("latest")])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image("latest"),
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "sh",
    ]));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image("latest"),
        "--tag",
        "nocmd",
        "--clear=config.cmd",
    ]));
    let archive = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    fs::remove_dir_all(&bundle).ok();
    archive
}

/// One private containerd.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests share two cores: one containerd at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containerd {
    /// Starts containerd in a fresh directory and imports the busybox image.
    pub fn start(name: &str) -> Containerd {
        let dir = PathBuf::from(format!("/tmp/rvm-ctd-{name}-{}", std::process::id()));
        if dir.exists() {
            cleanup_mounts(&dir);
            fs::remove_dir_all(&dir).expect("remove an old test directory");
        }
        fs::create_dir_all(&dir).expect("create the test directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).expect("chmod");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("write containerd config");
        fs::write(
            dir.join("rust-vm.toml"),
            format!(
                "# test configuration: agent on the host in namespaces (no VM)\n\
                 backend = \"namespaces\"\nagent = \"{}\"\nagent_timeout_secs = 20\n",
                agent_binary().display()
            ),
        )
        .expect("write rust-vm config");
        let mut ctd = Containerd {
            dir,
            socket,
            config,
            child: None,
        };
        ctd.launch();
        let archive = build_busybox_image(&ctd.dir);
        ctd.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            "rust-vm.test/busybox",
            archive.to_str().expect("utf-8 path"),
        ]);
        ctd
    }

    fn launch(&mut self) {
        let shim_dir = shim_binary()
            .parent()
            .expect("shim directory")
            .to_path_buf();
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .env("RUST_VM_CONFIG", self.dir.join("rust-vm.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up:\n{}", self.log());
    }

    /// Stops containerd (its shims keep running) and starts it again on the same directories.
    /// Writes `vm.toml` for the `vm` back-end in this containerd's directory: the guest kernel
    /// at `kernel`, the guest image `guest_image`, this workspace's VMM, then the `extra` TOML
    /// lines. Returns its path.
    /// A rust-vm configuration selecting the `vm` back-end with the documented defaults
    /// (installed kernel and guest image, detected emulating-host options and agent timeout) and
    /// our VMM.
    pub fn vm_backend_config(&self) -> PathBuf {
        let vmm = workspace_binary("rust-vm-vmm", "rust-vm-vmm");
        let config = self.dir.join("vm.toml");
        fs::write(
            &config,
            format!("backend = \"vm\"\nvmm = \"{}\"\n", vmm.display()),
        )
        .expect("write vm.toml");
        config
    }

    pub fn write_vm_config(&self, kernel: &str, guest_image: &Path, extra: &str) -> PathBuf {
        let vmm = workspace_binary("rust-vm-vmm", "rust-vm-vmm");
        let config = self.dir.join("vm.toml");
        std::fs::write(
            &config,
            format!(
                "backend = \"vm\"\nkernel = \"{kernel}\"\nguest_image = \"{}\"\nvmm = \"{}\"\n{extra}",
                guest_image.display(),
                vmm.display()
            ),
        )
        .expect("write vm.toml");
        config
    }

    pub fn restart(&mut self) {
        self.stop_daemon();
        self.launch();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_input(args, None)
    }

    pub fn ctr_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run ctr");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("ctr stdin");
            stdin.write_all(input).expect("write ctr stdin");
        }
        child.wait_with_output().expect("wait for ctr")
    }

    /// Runs ctr and returns its stdout, failing the test with ctr's stderr otherwise.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\n{}\n--- containerd log tail ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The task's status column in `ctr task ls` (None when there is no task).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    pub fn wait_for_status(&self, id: &str, want: Option<&str>, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.task_status(id);
            if status.as_deref() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} is {status:?}, expected {want:?} within {limit:?}\n{}",
                tail(&self.log(), 30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The task's state directory (bundle) in containerd's state.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task/default")
            .join(id)
    }

    /// The shim socket path of a task, from its bundle's `address` file.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        let address = fs::read_to_string(self.bundle(id).join("address")).expect("address file");
        PathBuf::from(address.trim().trim_start_matches("unix://"))
    }

    /// The pid of the shim serving a task, from its bundle's `shim.pid` file.
    pub fn shim_pid(&self, id: &str) -> u32 {
        let pid = fs::read_to_string(self.bundle(id).join("shim.pid")).expect("shim.pid file");
        pid.trim().parse().expect("shim.pid holds a pid")
    }

    /// Shim daemons of this containerd, found by the containerd address on their command line.
    pub fn shim_pids(&self) -> Vec<u32> {
        let needle = self.socket.to_string_lossy().into_owned();
        let matching = processes()
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline
                    .first()
                    .is_some_and(|a| a.ends_with("containerd-shim-rust-vm-v2"))
                    && cmdline.iter().any(|a| a == &needle)
                    && cmdline.iter().any(|a| a == "-socket")
            })
            .map(|(pid, _)| pid)
            .filter(|&pid| alive(pid))
            .collect::<Vec<u32>>();
        // The namespaces sandbox forks a waiter from the shim (no exec): same command line.
        matching
            .iter()
            .copied()
            .filter(|&pid| parent_pid(pid).is_none_or(|p| !matching.contains(&p)))
            .collect()
    }

    /// Mount points under this containerd's directories.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(&self.dir)
    }

    /// Stops every task, then containerd; kills any shim of ours still around.
    fn teardown(&mut self) {
        if self.child.is_some() {
            let out = self.ctr(&["task", "ls", "-q"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["task", "delete", "--force", id]);
            }
            let out = self.ctr(&["containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        let shims = self.shim_pids();
        self.stop_daemon();
        for pid in shims {
            // SAFETY: plain kill(2) of a shim this containerd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        cleanup_mounts(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn cleanup_mounts(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The sandbox state directory the shim uses for a pod (same derivation as the shim).
pub fn sandbox_state_dir(namespace: &str, sandbox_id: &str) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{namespace}/{sandbox_id}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from(format!("/run/rust-vm-shim/{hash:016x}"))
}

pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The shim's task socket (its fd 3, handed over by `start`) stays with the shim: none of
/// `pids` (the processes it started: VMM, agent, helpers) holds it.
pub fn assert_task_socket_not_inherited(shim: u32, pids: &[u32]) {
    let task_socket = std::fs::read_link(format!("/proc/{shim}/fd/3")).expect("shim fd 3");
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // gone meanwhile
        };
        for fd in fds.flatten() {
            assert_ne!(
                std::fs::read_link(fd.path()).ok().as_ref(),
                Some(&task_socket),
                "process {pid} inherited the shim's task socket as fd {:?}",
                fd.file_name()
            );
        }
    }
}
