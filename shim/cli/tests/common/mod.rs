//! Helpers for the `rust-vm` command tests: bundles with the runtime's own spec, a private state
//! root, and running the command (the rest: rust-vm-test-support).

#![allow(dead_code, unused_imports)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use rust_vm_test_support::{agent, alive, processes_mentioning, vmm, BusyboxBundle};

pub fn rust_vm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rust-vm"))
}

/// `rust-vm --root <root> --config /dev/null --backend vm`: the `vm` back-end with the built-in
/// defaults and a private state root.
pub fn vm_command(root: &Path) -> Command {
    let mut cmd = Command::new(rust_vm());
    cmd.arg("--root")
        .arg(root)
        .args(["--config", "/dev/null", "--backend", "vm"]);
    cmd
}

/// `<cmd> --log <log> run --bundle <bundle> <id>` with stdin from /dev/null, to completion.
pub fn run_logged(mut cmd: Command, log: &Path, bundle: &BusyboxBundle, id: &str) -> Output {
    cmd.arg("--log")
        .arg(log)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .expect("running rust-vm run")
}

/// A busybox bundle whose config.json is `rust-vm spec`'s with `args` as the process.
pub fn bundle(args: &[&str]) -> BusyboxBundle {
    bundle_with(args, |_| {})
}

/// [`bundle`] with `edit` applied to the spec.
pub fn bundle_with(args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> BusyboxBundle {
    BusyboxBundle::with_runtime_spec(&rust_vm(), args, edit)
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
    pub fn create(&self, id: &str, bundle: &BusyboxBundle, io: &Path) {
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
