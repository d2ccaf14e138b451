//! One private containerd with its CRI plugin, run inside a network namespace of its own: its
//! own root, state, sockets, runc root, CNI configuration and IPAM store under one directory,
//! nothing shared with a system containerd. Dropping it tears everything down, whatever the
//! checks left: containerd and its shims killed, container processes killed through the pod
//! cgroups, mounts under the directory undone, pod cgroups removed, the namespace deleted and
//! the directory removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::images;
use crate::netns::{run, NetNs};

/// Where containerd's streaming server listens: the test namespace's loopback.
pub const STREAM_PORT: u16 = 10010;
/// The pods' subnet on the CNI bridge (inside the test namespace only).
pub const POD_SUBNET: &str = "10.99.0.0/24";
/// The rust-vm handler's `agent_timeout_secs`: where guest ring 0 is instruction-emulated (PVM
/// hosts) a VM boot took 70 to over 240 s, depending on what else the host's cores ran.
const RUST_VM_AGENT_TIMEOUT_SECS: u64 = 600;
/// The rust-vm handler's `vcpus` and `mem_mib`: a pod's VM gets these on top of its containers'
/// limits (docs/containerd.md, "Pod sizing"), which the PodSizing check sees from inside.
pub const RUST_VM_VCPUS: u32 = 1;
pub const RUST_VM_MEM_MIB: u64 = 256;

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The cgroup parent (cgroupfs path) under which the pods' cgroups are made.
    pub cgroup_root: String,
    config: PathBuf,
    child: Option<Child>,
    /// Whether handler `rust-vm` is registered (and its shim put on containerd's PATH).
    rust_vm: bool,
    // Dropped after the teardown in `drop`, which still uses it.
    pub netns: NetNs,
}

impl Containerd {
    /// Creates the namespace and directory, writes the configuration, starts containerd, waits
    /// for the CRI plugin and imports the busybox and pause images into `k8s.io`. `name` is
    /// the runtime handler the suite runs; for `rust-vm` the handler is registered too.
    pub fn start(name: &str) -> Result<Containerd> {
        let id = format!("rvm-cri-{name}-{}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{id}"));
        if dir.exists() {
            umount_under(&dir);
            fs::remove_dir_all(&dir).context("remove an old test directory")?;
        }
        fs::create_dir_all(dir.join("cni"))?;
        let netns = NetNs::create(&id)?;
        let mut ctd = Containerd {
            socket: dir.join("containerd.sock"),
            config: dir.join("containerd.toml"),
            cgroup_root: format!("/{id}"),
            dir,
            child: None,
            rust_vm: name == "rust-vm",
            netns,
        };
        ctd.write_config()?;
        ctd.launch()?;
        for archive in [images::busybox(&ctd.dir)?, images::pause(&ctd.dir)?] {
            let image = archive.file_stem().unwrap().to_string_lossy().into_owned();
            ctd.ctr(&[
                "images",
                "import",
                "--base-name",
                &format!("rust-vm.test/{image}"),
                archive.to_str().context("utf-8 path")?,
            ])?;
        }
        Ok(ctd)
    }

    /// Writes the rust-vm configuration (`vm` back-end, this workspace's VMM, a guest image
    /// around this tree's agent, the installed kernel and virtiofsd) and returns the CRI snippet
    /// registering handler `rust-vm` with it, as docs/kubernetes/containerd-config.toml does.
    fn write_rust_vm_config(&self) -> Result<String> {
        let vmm = rust_vm_test_support::vmm();
        let image_dir = self.dir.join("guest-image");
        fs::create_dir_all(&image_dir)?;
        let guest_image = rust_vm_test_support::guest_image::with_agent(&image_dir);
        // `RVM_CRI_KERNEL=PATH`: another guest kernel than the installed one.
        let kernel = std::env::var("RVM_CRI_KERNEL")
            .map(|k| format!("kernel = \"{k}\"\n"))
            .unwrap_or_default();
        let path = self.dir.join("rust-vm.toml");
        fs::write(
            &path,
            format!(
                "# The CRI suite's rust-vm configuration: one microVM per pod.\n{kernel}\
                 backend = \"vm\"\n\
                 vmm = \"{}\"\n\
                 guest_image = \"{}\"\n\
                 # Guest ring 0 is instruction-emulated on the PVM hosts this runs on.\n\
                 agent_timeout_secs = {RUST_VM_AGENT_TIMEOUT_SECS}\n\
                 # A pod's VM: this plus its containers' limits.\n\
                 vcpus = {RUST_VM_VCPUS}\n\
                 mem_mib = {RUST_VM_MEM_MIB}\n",
                vmm.display(),
                guest_image.display()
            ),
        )?;
        let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
        Ok(format!(
            r#"{cri}.containerd.runtimes.rust-vm]
  runtime_type = "io.containerd.rust-vm.v2"
  privileged_without_host_devices = true
  pod_annotations = []
{cri}.containerd.runtimes.rust-vm.options]
  ConfigPath = "{}"
"#,
            path.display()
        ))
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.display();
        let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

{cri}]
  sandbox_image = "{pause}"
  # Required on this host: without it runc fails writing oom_score_adj -998 for the sandbox.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{port}"
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384
  # The writable layers' usage is collected every this many seconds (default 10): until the
  # first collection ContainerStats has no writable-layer figures.
  stats_collect_period = 1

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.runc.options]
  Root = "{d}/runc"

{rust_vm}
{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni"
  max_conf_num = 1
"#,
            pause = images::PAUSE_IMAGE,
            port = STREAM_PORT,
            rust_vm = if self.rust_vm {
                self.write_rust_vm_config()?
            } else {
                String::new()
            },
        );
        fs::write(&self.config, config)?;
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "rvm-cri",
            "plugins": [{
                "type": "bridge",
                "bridge": "rvmcri0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_SUBNET }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": format!("{d}/cni-ipam"),
                }
            }]
        });
        fs::write(
            self.dir.join("cni/10-rvm-cri.conflist"),
            serde_json::to_string_pretty(&conflist)?,
        )?;
        Ok(())
    }

    /// Starts containerd in the test namespace (`nsenter --net`, which leaves /sys and the
    /// cgroup mounts alone) and waits until `ctr version` answers.
    fn launch(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = self.netns.enter();
        if self.rust_vm {
            // containerd finds `containerd-shim-rust-vm-v2` in its PATH.
            let shim = rust_vm_test_support::workspace_binary(
                "containerd-shim-rust-vm-v2",
                "containerd-shim-rust-vm-v2",
            );
            let shim_dir = shim.parent().context("the shim's directory")?;
            let path =
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
            cmd.env("PATH", format!("{}:{path}", shim_dir.display()));
        }
        let child = cmd
            .arg("containerd")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start containerd (apt-get install containerd)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("containerd did not come up:\n{}", self.log_tail(30))
    }

    /// Stops containerd (SIGTERM; its shims and containers keep running) and starts it again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon();
        self.launch()
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs containerd: the child is containerd itself.
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Cgroup directories (one per v1 hierarchy) under the pods' cgroup root.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for hierarchy in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let root = hierarchy
                .path()
                .join(self.cgroup_root.trim_start_matches('/'));
            if root.is_dir() {
                collect_dirs(&root, &mut dirs);
            }
        }
        dirs
    }

    /// Live processes whose command line names this containerd's socket (its shims).
    pub fn shim_pids(&self) -> Vec<u32> {
        let socket = self.socket.to_string_lossy().into_owned();
        rust_vm_test_support::processes_mentioning(&socket)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim"))
            .map(|(pid, _)| pid)
            .collect()
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

fn umount_under(dir: &Path) {
    let mut points = rust_vm_test_support::mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks (sandboxes and containers) still known: their shims' sockets and CNI cache
        // entries live outside our directory and outlive a killed shim.
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task/k8s.io");
        let ids: Vec<String> = fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let sockets: Vec<String> = ids
            .iter()
            .filter_map(|id| fs::read_to_string(tasks.join(id).join("address")).ok())
            .map(|a| a.trim().trim_start_matches("unix://").to_string())
            .collect();
        let shims = self.shim_pids();
        self.stop_daemon();
        for pid in shims {
            // SAFETY: kill(2) of a shim this containerd started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for socket in sockets
            .iter()
            .filter(|s| s.starts_with("/run/containerd/s/"))
        {
            let _ = fs::remove_file(socket);
        }
        for entry in fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
                let _ = fs::remove_file(entry.path());
            }
        }
        // Container processes, found through the pods' cgroups (deepest first).
        let cgroups = self.cgroup_dirs();
        for dir in &cgroups {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process in one of this suite's pod cgroups.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        umount_under(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in &cgroups {
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if std::env::var_os("RVM_CRI_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
