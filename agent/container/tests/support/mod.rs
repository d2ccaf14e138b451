//! Shared helpers: specs and a busybox rootfs.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use rust_vm_container::parse_spec_json;

/// A minimal, valid spec in the shape containerd produces; `args` is the process.
pub fn spec_json(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "/rootfs", "readonly": false },
        "hostname": "box",
        "process": {
            "args": args,
            "cwd": "/",
            "env": ["PATH=/bin:/sbin", "FOO=bar"],
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
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
            "readonlyPaths": ["/proc/sys"],
        },
    })
}

pub fn spec_from(v: &serde_json::Value) -> Spec {
    parse_spec_json(v.to_string().as_bytes()).expect("test spec is valid")
}

/// A directory with busybox and the applets the tests use; removed on drop.
pub struct BusyboxRootfs {
    pub dir: PathBuf,
}

impl BusyboxRootfs {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rust-vm-rootfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "home/user"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
        for applet in [
            "sh", "echo", "hostname", "id", "pwd", "cat", "sleep", "ls", "env", "true", "false",
            "grep", "wc", "mkdir", "kill", "ps", "tty", "stat", "head", "touch", "mount",
            "readlink",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        BusyboxRootfs { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for BusyboxRootfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Mount points (field 5 of mountinfo) in the caller's namespace under `prefix`.
pub fn mounts_under(prefix: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(prefix))
        .collect()
}
