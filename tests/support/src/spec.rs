//! The OCI spec the agent-side tests and benchmarks start from.

/// A minimal, valid spec in the shape containerd produces, with `args` as the process: the five
/// usual namespaces, `/proc`, a tmpfs `/dev` with `/dev/pts`, masked and read-only paths. The
/// root path is absolute (the container library requires it); the agent replaces it with the
/// rootfs a create request names.
pub fn spec_json(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": "/rootfs", "readonly": false },
        "hostname": "box",
        "process": {
            "terminal": false,
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
