//! Shared helpers: specs.

use oci_spec::runtime::Spec;

use crate::parse_spec_json;

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
