//! The pod's shared namespaces as the agent sees them.
//!
//! containerd's CRI plugin names the pod's IPC and UTS namespaces (and its PID namespace when the
//! pod shares one, `shareProcessNamespace`) in every application container's spec by path:
//! `/proc/<pid>/ns/<type>`, with the pid the runtime reported for the pod's sandbox (pause)
//! container. That path means nothing where the agent runs: on `vm` the reported pid is the
//! VMM's (the pid rule, [`crate::pod`]) and the guest's `/proc` is the guest's. The pod's
//! namespaces are those of the pod's first container (its sandbox container) in the agent's
//! view, so [`rewrite`] turns a path naming one of the pod's host pids into the same namespace of
//! that container's init, `/proc/<its pid in the agent's namespace>/ns/<type>`. Other paths are
//! left as they are (the agent refuses what it cannot open, naming the path).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// Rewrites the namespace paths of `spec` that name one of `pod_pids` (host pids the runtime
/// reported for the pod's processes) to the namespaces of the process whose pid in the agent's
/// namespace is `guest_pid`. Returns what it rewrote, `(from, to)`.
pub fn rewrite(spec: &mut Spec, pod_pids: &[u32], guest_pid: i32) -> Vec<(PathBuf, PathBuf)> {
    let mut rewritten = Vec::new();
    let Some(namespaces) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    else {
        return rewritten;
    };
    for ns in namespaces.iter_mut() {
        let Some(path) = ns.path().as_deref() else {
            continue;
        };
        let Some((pid, name)) = proc_namespace(path) else {
            continue;
        };
        if !pod_pids.contains(&pid) {
            continue;
        }
        let to = PathBuf::from(format!("/proc/{guest_pid}/ns/{name}"));
        rewritten.push((path.to_path_buf(), to.clone()));
        ns.set_path(Some(to));
    }
    rewritten
}

/// `(pid, type)` of a path `/proc/<pid>/ns/<type>`.
fn proc_namespace(path: &Path) -> Option<(u32, String)> {
    let rest = path.to_str()?.strip_prefix("/proc/")?;
    let (pid, name) = rest.split_once("/ns/")?;
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase());
    valid.then(|| Some((pid.parse().ok()?, name.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": namespaces}
        }))
        .unwrap()
    }

    fn paths(spec: &Spec) -> Vec<(String, Option<String>)> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    format!("{:?}", n.typ()),
                    n.path().as_ref().map(|p| p.display().to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn the_pods_namespaces_as_cri_names_them_become_the_sandbox_containers() {
        // As containerd 1.6 writes an application container's namespaces (pid shared).
        let mut s = spec(serde_json::json!([
            {"type": "pid", "path": "/proc/4242/ns/pid"},
            {"type": "ipc", "path": "/proc/4242/ns/ipc"},
            {"type": "uts", "path": "/proc/4242/ns/uts"},
            {"type": "mount"},
            {"type": "network", "path": "/var/run/netns/cni-1"},
            {"type": "cgroup", "path": "/proc/77/ns/cgroup"},
        ]));
        let done = rewrite(&mut s, &[4242], 9);
        assert_eq!(done.len(), 3);
        assert_eq!(
            paths(&s),
            [
                ("Pid".into(), Some("/proc/9/ns/pid".into())),
                ("Ipc".into(), Some("/proc/9/ns/ipc".into())),
                ("Uts".into(), Some("/proc/9/ns/uts".into())),
                ("Mount".into(), None),
                ("Network".into(), Some("/var/run/netns/cni-1".into())),
                // Not a pid of the pod: left for the agent to refuse by name.
                ("Cgroup".into(), Some("/proc/77/ns/cgroup".into())),
            ]
        );
    }

    #[test]
    fn paths_that_are_not_proc_namespaces_are_left_alone() {
        for path in [
            "/proc/4242/ns/",
            "/proc/4242/fd/3",
            "/proc/x/ns/ipc",
            "/proc/4242/ns/../ipc",
            "/run/netns/4242",
        ] {
            let mut s = spec(serde_json::json!([{"type": "ipc", "path": path}]));
            assert!(rewrite(&mut s, &[4242], 9).is_empty(), "{path}");
        }
        let mut none = spec(serde_json::json!([]));
        assert!(rewrite(&mut none, &[4242], 9).is_empty());
    }
}
