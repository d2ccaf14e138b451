//! Pod sandbox checks: RunPodSandbox as the kubelet sends it, and StopPodSandbox +
//! RemovePodSandbox leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::checks::container;
use crate::containerd::{RUST_VM_MEM_MIB, RUST_VM_VCPUS};
use crate::cri::{field, Pod, Suite};
use crate::netns::run;

pub async fn run_pod_sandbox(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let resp = suite.pod_status(&pod.id).await?;
    let status = resp.status.context("no status")?;
    ensure!(
        status.state == PodSandboxState::SandboxReady as i32,
        "state {} is not READY",
        status.state
    );
    ensure!(status.metadata == pod.config.metadata, "metadata differs");
    ensure!(status.labels == pod.config.labels, "labels differ");
    ensure!(
        status.runtime_handler == handler,
        "runtime handler {:?}",
        status.runtime_handler
    );
    let ip = status.network.context("no network status")?.ip;
    ensure!(
        ip.starts_with("10.99.0."),
        "pod IP {ip:?} not in the CNI subnet"
    );
    let ns = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .context("no namespace options")?;
    let want = pod.config.linux.as_ref().unwrap().security_context.as_ref();
    ensure!(
        Some(&ns) == want.and_then(|s| s.namespace_options.as_ref()),
        "namespace options {ns:?}"
    );
    // The pod's hostname (the pause process's UTS namespace) and its resolv.conf. A VM
    // handler's pause process runs in the guest (the pid is the VMM's, whose UTS namespace is
    // the host's): ContainerEnvironment checks the hostname from inside the pod for both.
    let info = pod_info(&resp.info)?;
    let pid = info["pid"].as_u64().context("no pause pid")?;
    if !is_vm(handler) {
        let hostname = run(Command::new("nsenter")
            .arg(format!("--uts=/proc/{pid}/ns/uts"))
            .arg("hostname"))?;
        ensure!(
            hostname.trim() == pod.config.hostname,
            "hostname {hostname:?}"
        );
    } else {
        ensure!(
            rust_vm_test_support::alive(pid as u32),
            "the pod's pid {pid} (its VMM) is not alive"
        );
    }
    let resolv = std::fs::read_to_string(sandbox_dir(suite, &pod.id).join("resolv.conf"))
        .context("the sandbox's resolv.conf")?;
    for want in [
        "nameserver 10.99.0.10",
        "search default.svc.cluster.local svc.cluster.local",
        "options ndots:5",
    ] {
        ensure!(
            resolv.contains(want),
            "resolv.conf lacks {want:?}:\n{resolv}"
        );
    }
    let log_dir = info["config"]["log_directory"].as_str().unwrap_or_default();
    ensure!(
        Path::new(log_dir) == pod.log_dir(),
        "log directory {log_dir:?}"
    );
    Ok(())
}

/// Pod sizing: containerd passes the pod's resources (the sums of its containers' limits) on to
/// the runtime as annotations of the sandbox container, and a VM handler sizes the pod's VM from
/// them on top of its own `vcpus` / `mem_mib`, which a container sees as the machine's CPUs and
/// memory. (runc has no VM to size: for it, the annotations and that the read-out works.)
pub async fn pod_sizing(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let info = pod_info(&suite.pod_status(&pod.id).await?.info)?;
    let annotations = &info["runtimeSpec"]["annotations"];
    let want = container::main_pod_resources();
    for (key, value) in [
        ("io.kubernetes.cri.sandbox-cpu-period", want.cpu_period),
        ("io.kubernetes.cri.sandbox-cpu-quota", want.cpu_quota),
        (
            "io.kubernetes.cri.sandbox-memory",
            want.memory_limit_in_bytes,
        ),
    ] {
        ensure!(
            annotations[key].as_str() == Some(value.to_string().as_str()),
            "sandbox annotation {key} is {}, want {value:?}",
            annotations[key]
        );
    }
    // What the container sees as its machine (runc: the host's, so only read, which proves the
    // script). Builtins only: where guest ring 0 is emulated, every process started costs seconds.
    let id = suite.container_id("main")?;
    let out = suite
        .sh(
            &id,
            "n=0; while read k rest; do case $k in processor) n=$((n+1));; esac; done < /proc/cpuinfo; \
             echo \"cpus=$n\"; \
             while read k v rest; do case $k in MemTotal:) echo \"mem_kib=$v\";; esac; done < /proc/meminfo",
        )
        .await?;
    let number = |key: &str| -> Result<u64> {
        field(&out, key)?
            .parse()
            .with_context(|| format!("{key} in {out:?}"))
    };
    let (seen_cpus, mem_kib) = (number("cpus")?, number("mem_kib")?);
    ensure!(seen_cpus > 0 && mem_kib > 0, "read {out:?}");
    if !is_vm(handler) {
        return Ok(());
    }
    let quota_cpus = (want.cpu_quota as u64).div_ceil(want.cpu_period as u64);
    let cpus = u64::from(RUST_VM_VCPUS) + quota_cpus;
    ensure!(
        seen_cpus == cpus,
        "the VM has {seen_cpus} CPUs, want {RUST_VM_VCPUS} + {quota_cpus} for the pod's quota"
    );
    // MemTotal is the VM's memory less what its kernel reserved at boot: above `mem_mib` only
    // if the pod's limit was added, and never above the sum.
    let limit_mib = want.memory_limit_in_bytes as u64 >> 20;
    let (least, most) = (RUST_VM_MEM_MIB * 1024, (RUST_VM_MEM_MIB + limit_mib) * 1024);
    ensure!(
        least < mem_kib && mem_kib <= most,
        "the VM's MemTotal is {mem_kib} KiB, want above {least} ({RUST_VM_MEM_MIB} MiB) and at \
         most {most} ({RUST_VM_MEM_MIB} MiB + the pod's {limit_mib} MiB)"
    );
    Ok(())
}

/// Whether `handler` runs each pod in a VM (whose processes are not host processes).
pub fn is_vm(handler: &str) -> bool {
    handler == "rust-vm"
}

/// The sandbox's directory in the CRI plugin's root (hostname, hosts, resolv.conf, shm).
fn sandbox_dir(suite: &Suite, id: &str) -> PathBuf {
    suite
        .dir
        .join("root/io.containerd.grpc.v1.cri/sandboxes")
        .join(id)
}

fn pod_info(info: &std::collections::HashMap<String, String>) -> Result<serde_json::Value> {
    serde_json::from_str(info.get("info").context("no verbose info")?)
        .context("parse the verbose pod info")
}

/// What a running pod holds on the host, to check it is all gone after removal.
pub struct Footprint {
    ids: Vec<String>,
    pids: Vec<u32>,
    netns: String,
    ip: String,
    host_veth_index: String,
}

impl Footprint {
    pub async fn of(suite: &Suite, pod: &Pod) -> Result<Footprint> {
        let resp = suite.pod_status(&pod.id).await?;
        let info = pod_info(&resp.info)?;
        let mut pids = vec![info["pid"].as_u64().context("no pause pid")? as u32];
        let mut ids = vec![pod.id.clone()];
        let containers = suite
            .rt()
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    pod_sandbox_id: pod.id.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        for c in containers {
            let pid = suite.container_info(&c.id).await?["pid"].as_u64();
            pids.extend(pid.filter(|&p| p > 0).map(|p| p as u32));
            ids.push(c.id);
        }
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .context("no network namespace path in the pod's spec")?
            .to_string();
        // `2: eth0@if7: ...`: the host end's index in containerd's namespace.
        let eth0 = run(Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["ip", "-o", "link", "show", "eth0"]))?;
        let host_veth_index = eth0
            .split_once("@if")
            .and_then(|(_, rest)| rest.split(':').next())
            .context("no veth peer for eth0")?
            .to_string();
        let ip = resp
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        Ok(Footprint {
            ids,
            pids,
            netns,
            ip,
            host_veth_index,
        })
    }

    /// Nothing of the pod left: processes, mounts, network namespace, veth, IP lease, runtime
    /// state, cgroups.
    pub async fn assert_gone(&self, suite: &Suite) -> Result<()> {
        for &pid in &self.pids {
            ensure!(
                !rust_vm_test_support::alive(pid),
                "process {pid} still runs"
            );
        }
        let mounts: Vec<String> = rust_vm_test_support::mounts_under(Path::new("/"))
            .into_iter()
            .filter(|m| self.ids.iter().any(|id| m.contains(id.as_str())) || *m == self.netns)
            .collect();
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        ensure!(
            !Path::new(&self.netns).exists(),
            "netns {} left",
            self.netns
        );
        let links = run(Command::new("nsenter")
            .arg(format!("--net={}", suite.netns.display()))
            .args(["ip", "-o", "link", "show"]))?;
        let prefix = format!("{}:", self.host_veth_index);
        ensure!(
            !links.lines().any(|l| l.starts_with(&prefix)),
            "host veth (index {}) left",
            self.host_veth_index
        );
        // libcni's result cache is global (containerd 1.6 cannot move it): our entries go too.
        let cached: Vec<_> = std::fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                self.ids
                    .iter()
                    .any(|id| e.file_name().to_string_lossy().contains(id.as_str()))
            })
            .map(|e| e.path())
            .collect();
        ensure!(
            cached.is_empty(),
            "CNI result cache entries left: {cached:?}"
        );
        let lease = suite.dir.join("cni-ipam/rvm-cri").join(&self.ip);
        ensure!(!lease.exists(), "IP lease {lease:?} left");
        let pods = suite
            .rt()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items;
        ensure!(
            !pods.iter().any(|p| self.ids.contains(&p.id)),
            "pod still listed"
        );
        let containers = suite
            .rt()
            .list_containers(ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers;
        ensure!(
            !containers.iter().any(|c| self.ids.contains(&c.id)),
            "containers still listed"
        );
        for id in &self.ids {
            for dir in [
                suite
                    .dir
                    .join("root/io.containerd.grpc.v1.cri/sandboxes")
                    .join(id),
                suite
                    .dir
                    .join("root/io.containerd.grpc.v1.cri/containers")
                    .join(id),
                suite
                    .dir
                    .join("state/io.containerd.runtime.v2.task/k8s.io")
                    .join(id),
                suite
                    .dir
                    .join("state/io.containerd.grpc.v1.cri/sandboxes")
                    .join(id),
                suite.dir.join("runc/k8s.io").join(id),
            ] {
                ensure!(!dir.exists(), "state left: {dir:?}");
            }
        }
        let cgroups: Vec<_> = suite
            .ctd
            .lock()
            .await
            .cgroup_dirs()
            .into_iter()
            .filter(|d| self.ids.iter().any(|id| d.ends_with(id)))
            .collect();
        ensure!(cgroups.is_empty(), "container cgroups left: {cgroups:?}");
        Ok(())
    }
}

/// StopPodSandbox and RemovePodSandbox on the main pod (with its containers, running or
/// exited): nothing of it may be left.
pub async fn stop_remove_pod_sandbox(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let footprint = Footprint::of(suite, &pod).await?;
    suite.remove_pod(&pod.id).await?;
    *suite.pod.lock().await = None;
    footprint.assert_gone(suite).await
}
