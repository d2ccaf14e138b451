//! Busybox bundles: a scratch directory holding `rootfs/` (Debian's busybox-static and its
//! applet links) and, when asked, a `config.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's static busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets linked into every test rootfs.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "true", "false", "ls", "ps", "kill", "hostname", "id", "pwd",
    "env", "grep", "wc", "head", "tty", "stty", "ip", "mkdir", "stat", "touch", "mount",
    "readlink", "uname", "nc",
];

/// Fills `root` with a busybox rootfs: the usual top directories, `bin/busybox` with
/// [`APPLETS`] linked to it, and an `/etc/passwd` and `/etc/group` with root and `user`
/// (1000:1000, home `/home/user`) and a group `extra` (2000).
pub fn busybox_rootfs(root: &Path) {
    for d in [
        "bin",
        "proc",
        "dev",
        "sys",
        "tmp",
        "etc",
        "root",
        "home/user",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir in the rootfs");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox"))
        .expect("copying /bin/busybox (apt-get install busybox-static)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .expect("symlink an applet");
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .expect("write etc/passwd");
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nextra:x:2000:\n",
    )
    .expect("write etc/group");
}

/// A temporary directory (removed on drop) holding a busybox `rootfs/` and room for state.
pub struct BusyboxBundle {
    pub dir: tempfile::TempDir,
}

impl BusyboxBundle {
    /// The rootfs only; `tag` names the directory (`rust-vm-TAG-…` under the temp dir).
    pub fn new(tag: &str) -> BusyboxBundle {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rust-vm-{tag}-"))
            .tempdir()
            .expect("tempdir");
        busybox_rootfs(&dir.path().join("rootfs"));
        BusyboxBundle { dir }
    }

    /// With `spec` as its `config.json`.
    pub fn with_spec(tag: &str, spec: &serde_json::Value) -> BusyboxBundle {
        let bundle = BusyboxBundle::new(tag);
        bundle.write_spec(spec);
        bundle
    }

    /// With the `config.json` that `rust_vm spec` (the runtime binary at that path) writes,
    /// `args` as the process and `edit` applied.
    pub fn with_runtime_spec(
        rust_vm: &Path,
        args: &[&str],
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> BusyboxBundle {
        let bundle = BusyboxBundle::new("bundle");
        let out = Command::new(rust_vm)
            .args(["spec", "--bundle"])
            .arg(bundle.path())
            .output()
            .unwrap_or_else(|e| panic!("{} spec: {e}", rust_vm.display()));
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut spec: serde_json::Value =
            serde_json::from_slice(&fs::read(bundle.config()).expect("read config.json"))
                .expect("config.json is JSON");
        spec["process"]["args"] = serde_json::json!(args);
        edit(&mut spec);
        bundle.write_spec(&spec);
        bundle
    }

    pub fn write_spec(&self, spec: &serde_json::Value) {
        fs::write(
            self.config(),
            serde_json::to_vec_pretty(spec).expect("spec to JSON"),
        )
        .expect("write config.json");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }
}
