//! Helpers for the `rust-vm` command tests: busybox bundles, a private state root, and running
//! the command.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn rust_vm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"))
}

/// The agent binary next to `rust-vm` (same target directory), built on first use.
pub fn agent() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let dir = rust_vm().parent().expect("bin dir").to_path_buf();
            let agent = dir.join("rust-vm-agent");
            if !agent.exists() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "rust-vm-agent"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("running cargo build -p rust-vm-agent");
                assert!(status.success(), "cargo build -p rust-vm-agent failed");
            }
            assert!(agent.exists(), "{} missing", agent.display());
            agent
        })
        .clone()
}

/// A busybox bundle: `rootfs/bin/busybox` plus applet links, and a config.json from
/// `rust-vm spec` with `args` and the edits applied.
pub struct BundleDir {
    pub dir: tempfile::TempDir,
}

impl BundleDir {
    pub fn new(args: &[&str]) -> BundleDir {
        Self::with(args, |_| {})
    }

    pub fn with(args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> BundleDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (apt-get install busybox-static)");
        for applet in [
            "sh", "echo", "cat", "sleep", "true", "false", "ls", "ps", "kill", "hostname", "id",
            "wc", "env", "grep",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("ln");
        }
        let out = Command::new(rust_vm())
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .expect("rust-vm spec");
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.path().join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        spec["process"]["args"] = serde_json::json!(args);
        edit(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write");
        BundleDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the "pid" namespace from a spec: the process is then not a PID 1 (which the kernel
/// protects from signals it has no handler for), so it can die of SIGTERM.
pub fn without_pid_namespace(spec: &mut serde_json::Value) {
    if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
        list.retain(|ns| ns["type"] != "pid");
    }
}

/// A private state root and the namespaces back-end.
pub struct Runtime {
    pub root: tempfile::TempDir,
    pub backend: &'static str,
    pub extra: Vec<String>,
}

impl Runtime {
    pub fn namespaces() -> Runtime {
        Runtime {
            root: tempfile::tempdir().expect("tempdir"),
            backend: "namespaces",
            extra: vec!["--agent".into(), agent().display().to_string()],
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(rust_vm());
        cmd.arg("--root")
            .arg(self.root.path())
            .arg("--backend")
            .arg(self.backend)
            .arg("--config")
            .arg("/dev/null")
            .args(&self.extra);
        cmd
    }

    /// Runs `rust-vm <args>` with stdin from `input`, collecting its output.
    pub fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut cmd = self.command();
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("spawn rust-vm");
        if let Some(data) = input {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(data).expect("write stdin");
        }
        child.wait_with_output().expect("wait rust-vm")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "rust-vm {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            !out.status.success(),
            "rust-vm {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `create` with the container's stdio going to files in `io` (a monitor keeps the stdio it
    /// is given open until the container exits, so pipes would not reach EOF).
    pub fn create(&self, id: &str, bundle: &BundleDir, io: &Path) {
        let out = std::fs::File::create(io.join("stdout")).expect("stdout file");
        let err = std::fs::File::create(io.join("stderr")).expect("stderr file");
        let status = self
            .command()
            .args(["create", "--bundle"])
            .arg(bundle.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .expect("rust-vm create");
        assert!(
            status.success(),
            "create failed: {}",
            std::fs::read_to_string(io.join("stderr")).unwrap_or_default()
        );
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state json")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    pub fn wait_status(&self, id: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(id);
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {status} after {limit:?}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.path().join(id)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Leave nothing running even when a test failed half-way.
        if let Ok(entries) = std::fs::read_dir(self.root.path()) {
            for e in entries.flatten() {
                if let Some(id) = e.file_name().to_str() {
                    let _ = self.run(&["delete", "--force", id], None);
                }
            }
        }
    }
}

pub fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i + 2..].starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && process_exists(pid) {
                found.push((pid, text));
            }
        }
    }
    found
}
