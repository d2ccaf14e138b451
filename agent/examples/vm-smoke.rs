//! vm-smoke: the whole guest path on real parts, for a person to run (it needs /dev/kvm, the
//! guest kernel and a static agent, and takes minutes on an instruction-emulating PVM host).
//!
//! Boots our VMM with the guest kernel, an initramfs whose /init is the static agent, a virtio-blk
//! ext4 image holding a busybox rootfs and a vsock device; then, over `vsock-uds`, creates a
//! container on /dev/vda with cgroup v2 limits, reads its output, waits for its exit code, reads
//! its stats, removes it and shuts the VM down. Prints each step with its duration.
//!
//!   LIBSECCOMP_LINK_TYPE=static RUSTFLAGS="-C target-feature=+crt-static" \
//!     cargo build --release -p rust-vm-agent --bin rust-vm-agent --target x86_64-unknown-linux-gnu
//!   cargo build --release -p vmm
//!   cargo run -p rust-vm-agent --example vm-smoke -- \
//!     --vmm target/release/rust-vm-vmm \
//!     --agent target/x86_64-unknown-linux-gnu/release/rust-vm-agent

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use rust_vm_protocol::{Client, CreateContainer, RootfsSource, StreamKind};

/// The command line docs/pvm-host-boot.md gives for instruction-emulating hosts; harmless on
/// hardware KVM. What follows ` -- ` goes to the agent.
const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 noxsave nokaslr \
                       clearcpuid=smap,smep,popcnt syscall_pf_fixup -- --log-level debug";

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    vmm: PathBuf,
    /// The static agent binary (becomes /init).
    #[arg(long)]
    agent: PathBuf,
    #[arg(long, default_value = "/var/lib/rust-vm/vmlinux")]
    kernel: PathBuf,
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// How long the guest may take to boot to a listening agent.
    #[arg(long, default_value_t = 300)]
    boot_timeout_s: u64,
}

struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    let value = f().with_context(|| what.to_owned())?;
    println!(
        "{what:<40} ok  {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(value)
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn make_images(args: &Args, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(&args.busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "echo", "cat", "hostname"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let image = dir.join("rootfs.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("16M"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/build-initramfs.sh");
    let initrd = dir.join("initramfs.cpio.gz");
    run(Command::new("bash")
        .arg(script)
        .arg("--agent")
        .arg(&args.agent)
        .arg("--output")
        .arg(&initrd)
        .env("RUST_VM_CACHE", dir.join("cache")))?;
    Ok((image, initrd))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new().prefix("vm-smoke-").tempdir()?;
    let (image, initrd) = step("build rootfs image and initramfs", || {
        make_images(&args, dir.path())
    })?;
    let uds = dir.path().join("vsock.sock");
    let serial = dir.path().join("serial.log");
    let boot = Instant::now();
    let mut vm = Vm(Command::new(&args.vmm)
        .arg("--kernel")
        .arg(&args.kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--mem-mib", "256", "--cpu-template", "conservative"])
        .args(["--vsock-cid", "3", "--vsock-uds"])
        .arg(&uds)
        .arg("--block")
        .arg(&image)
        .arg("--serial")
        .arg(&serial)
        .args(["--cmdline", CMDLINE])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("vmm.log"))?)
        .spawn()
        .context("starting the VMM")?);
    let addr = format!("vsock-uds:{}:1024", uds.display());
    let client = step("boot until the agent answers", || {
        let deadline = boot + Duration::from_secs(args.boot_timeout_s);
        loop {
            if let Ok(Some(status)) = vm.0.try_wait() {
                bail!("the VMM exited with {status}; serial:\n{}", read(&serial));
            }
            if let Ok(client) = Client::connect(&addr) {
                if client.version().is_ok() {
                    return Ok(client);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "no agent; serial:\n{}",
                read(&serial)
            );
            thread::sleep(Duration::from_secs(1));
        }
    })?;
    let spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "/" },
        "hostname": "in-the-vm",
        "process": {
            "args": ["sh", "-c", "echo hello from the VM; echo pid $$; hostname; exit 7"],
            "cwd": "/", "env": ["PATH=/bin"], "user": { "uid": 0, "gid": 0 },
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"] },
        ],
        "linux": {
            "namespaces": [{ "type": "pid" }, { "type": "mount" }, { "type": "uts" }, { "type": "ipc" }],
            "resources": { "pids": { "limit": 32 }, "memory": { "limit": 67108864 } },
        },
    }))?;
    step("create container on /dev/vda", || {
        Ok(client.create_container(CreateContainer {
            container_id: "smoke".into(),
            spec: Box::new(spec),
            rootfs: RootfsSource::BlockDevice {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
            },
            terminal: false,
            console_size: None,
            stdin: false,
        })?)
    })?;
    let mut out = step("attach stdout", || {
        Ok(client.attach("smoke", None, StreamKind::Stdout)?)
    })?;
    step("start", || Ok(client.start("smoke")?))?;
    let text = step("read stdout to EOF", || {
        let mut text = String::new();
        out.read_to_string(&mut text)?;
        Ok(text)
    })?;
    let status = step("wait", || Ok(client.wait("smoke", None)?))?;
    let stats = step("stats", || Ok(client.stats("smoke")?))?;
    step("remove", || Ok(client.remove_container("smoke", false)?))?;
    step("shutdown", || Ok(client.shutdown()?))?;
    let exit = step("VMM exits", || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = vm.0.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "the VM did not stop");
            thread::sleep(Duration::from_millis(100));
        }
    })?;
    println!("container output: {text:?}");
    println!("exit status: {status:?}");
    println!("stats: {stats:?}");
    println!("VMM: {exit}");
    ensure!(
        text == "hello from the VM\npid 1\nin-the-vm\n",
        "unexpected output"
    );
    ensure!(status.exit_code == 7, "unexpected exit status");
    ensure!(stats.memory_limit_bytes == Some(64 << 20) && stats.pids_limit == Some(32));
    ensure!(exit.success(), "the VMM did not exit cleanly");
    println!("vm-smoke: PASS");
    Ok(())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
