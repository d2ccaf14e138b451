//! Shared by the host-mode tests and the benchmark: a busybox rootfs, specs, and an agent
//! process listening on a Unix socket.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;
use rust_vm_protocol::{Client, CreateContainer, RootfsSource};

/// Applets linked into the test rootfs.
const APPLETS: &[&str] = &[
    "sh", "echo", "hostname", "id", "pwd", "cat", "sleep", "env", "true", "false", "tty", "stty",
    "head", "kill", "ls", "wc", "grep", "ip",
];

/// A temporary directory holding `rootfs/` (busybox) and room for agent state.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("rust-vm-agent-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "home/user"] {
            fs::create_dir_all(root.join(d)).expect("mkdir in rootfs");
        }
        fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("copying /bin/busybox (Debian package busybox-static)");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .expect("symlink an applet");
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:\n",
        )
        .expect("group");
        Bundle { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A spec in the shape containerd produces, with `args` as the process.
pub fn spec_json(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "testbox",
        "process": {
            "terminal": false,
            "args": args,
            "cwd": "/",
            "env": ["PATH=/bin", "FOO=bar"],
            "user": { "uid": 0, "gid": 0 },
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "mount" }, { "type": "uts" },
                { "type": "ipc" }, { "type": "network" },
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
        },
    })
}

pub fn spec(value: &serde_json::Value) -> Spec {
    serde_json::from_value(value.clone()).expect("test spec parses")
}

pub fn create_request(
    bundle: &Bundle,
    id: &str,
    spec_value: &serde_json::Value,
) -> CreateContainer {
    CreateContainer {
        container_id: id.into(),
        spec: Box::new(spec(spec_value)),
        rootfs: RootfsSource::Directory {
            path: bundle.root(),
        },
        terminal: false,
        console_size: None,
        stdin: false,
    }
}

/// The agent binary in host mode on a Unix socket in `dir`. Stopped with SIGTERM on drop
/// (it removes its containers first), SIGKILL if that does not work.
pub struct Agent {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, extra: &[&str]) -> Agent {
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let addr = format!("unix:{}", socket.display());
        let child = Command::new(env!("CARGO_BIN_EXE_rust-vm-agent"))
            .arg("--listen")
            .arg(&addr)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--log-level", "debug"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("agent log file"))
            .spawn()
            .expect("starting rust-vm-agent");
        let mut agent = Agent { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited with {status}:\n{}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not listen:\n{}",
                agent.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        agent
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addr).expect("connecting to the agent")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn read_all(mut stream: UnixStream) -> String {
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("reading a stream");
    out
}

/// Whether a pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Mount points in our mount namespace at or under `prefix`.
pub fn mounts_under(prefix: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect()
}
