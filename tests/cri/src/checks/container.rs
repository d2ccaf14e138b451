//! CreateContainer and StartContainer as the kubelet sends them: hostPath volumes (read-only
//! and read-write), the kubelet's `/etc/hosts` and `/dev/termination-log` file mounts, env,
//! working directory, run-as user, CPU shares/quota and a memory limit; then what the running
//! container sees of each.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::cri::{container, field, Pod, Suite};

pub const MEMORY_LIMIT: i64 = 64 << 20;
/// The main container's CPU limit: half a CPU, as a CFS quota over 100 ms.
pub const CPU_QUOTA: i64 = 50_000;
pub const UID: i64 = 1000;

/// A shell script that prints `greeting`, then waits for SIGTERM and exits 0 on it, idle while
/// it waits: one long `sleep` in the background and `wait` (which a trapped signal ends). A
/// `sleep 1` loop starts a process every second, and in a VM pod on a host that emulates guest
/// ring 0 that alone kept the pod's vCPU busy and made each exec beside it take minutes.
pub fn waits_for_term(greeting: &str) -> String {
    format!(
        "trap 'echo got TERM; exit 0' TERM; echo {greeting}; \
         while :; do sleep 3600 & wait $!; done"
    )
}

/// The host side of the main container's volumes and file mounts.
pub struct Volumes {
    pub ro: PathBuf,
    pub rw: PathBuf,
    pub hosts: PathBuf,
    pub termination_log: PathBuf,
}

/// Makes the host side of the volumes of container `name` (as the kubelet does).
pub fn volumes(suite: &Suite, pod: &Pod, name: &str) -> Result<Volumes> {
    let v = volumes_paths(suite, pod, name);
    fs::create_dir_all(&v.ro)?;
    fs::create_dir_all(&v.rw)?;
    // Both writable by anyone: only the read-only mount may refuse the container's writes.
    for dir in [&v.ro, &v.rw] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))?;
    }
    fs::write(v.ro.join("data.txt"), "from the host\n")?;
    fs::write(
        &v.hosts,
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.99.0.2\t{}\n",
            pod.config.hostname
        ),
    )?;
    fs::write(&v.termination_log, "")?;
    fs::set_permissions(&v.termination_log, fs::Permissions::from_mode(0o666))?;
    Ok(v)
}

fn mount(container_path: &str, host_path: &std::path::Path, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.into(),
        host_path: host_path.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

/// The main container's configuration.
pub fn main_config(v: &Volumes) -> ContainerConfig {
    let mut c = container("main", &waits_for_term("started"));
    c.working_dir = "/work".into();
    c.envs = vec![
        KeyValue {
            key: "GREETING".into(),
            value: "hello from the kubelet".into(),
        },
        KeyValue {
            key: "KUBERNETES_SERVICE_HOST".into(),
            value: "10.96.0.1".into(),
        },
    ];
    c.mounts = vec![
        mount("/ro", &v.ro, true),
        mount("/rw", &v.rw, false),
        mount("/etc/hosts", &v.hosts, false),
        mount("/dev/termination-log", &v.termination_log, false),
    ];
    let linux = c.linux.as_mut().unwrap();
    let resources = linux.resources.as_mut().unwrap();
    resources.cpu_shares = 512;
    resources.cpu_period = 100_000;
    resources.cpu_quota = CPU_QUOTA;
    resources.memory_limit_in_bytes = MEMORY_LIMIT;
    let security = linux.security_context.as_mut().unwrap();
    security.run_as_user = Some(Int64Value { value: UID });
    security.run_as_group = Some(Int64Value { value: UID });
    c
}

/// The main pod's resources as the kubelet sums them: only the main container declares limits.
pub fn main_pod_resources() -> LinuxContainerResources {
    crate::cri::pod_resources(CPU_QUOTA, MEMORY_LIMIT)
}

pub async fn create_container(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let v = volumes(suite, &pod, "main")?;
    let config = main_config(&v);
    let id = suite.create(&pod, config.clone()).await?;
    suite.remember("main", &id);
    let status = suite.status(&id).await?;
    ensure!(
        status.state == ContainerState::ContainerCreated as i32,
        "state {} is not CREATED",
        status.state
    );
    ensure!(status.metadata == config.metadata, "metadata differs");
    ensure!(status.labels == config.labels, "labels differ");
    let want_log = pod.log_dir().join("main/0.log");
    ensure!(
        std::path::Path::new(&status.log_path) == want_log,
        "log path {:?}",
        status.log_path
    );
    for m in &config.mounts {
        ensure!(
            status
                .mounts
                .iter()
                .any(|s| s.container_path == m.container_path
                    && s.host_path == m.host_path
                    && s.readonly == m.readonly),
            "mount {} missing from the status: {:?}",
            m.container_path,
            status.mounts
        );
    }
    Ok(())
}

pub async fn start_container(suite: &Suite, _handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    suite.start_container(&id).await?;
    let status = suite.status(&id).await?;
    ensure!(
        status.state == ContainerState::ContainerRunning as i32,
        "state {} is not RUNNING",
        status.state
    );
    ensure!(status.started_at > 0, "no start time");
    let pid = suite.container_info(&id).await?["pid"]
        .as_u64()
        .context("no pid")?;
    ensure!(
        rust_vm_test_support::alive(pid as u32),
        "pid {pid} is not alive"
    );
    Ok(())
}

/// Env, working directory, user, hostname and DNS as the process sees them. One exec reads
/// them all: where guest ring 0 is emulated each exec takes most of a minute.
pub async fn environment(suite: &Suite, handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    let pod = suite.main_pod(handler).await?;
    let out = suite
        .sh(
            &id,
            "echo \"env=$GREETING\"; echo \"cwd=$(pwd)\"; echo \"ids=$(id -u):$(id -g)\"; \
             echo \"hostname=$(hostname)\"; cat /etc/resolv.conf",
        )
        .await?;
    for (what, key, want) in [
        ("env", "env", "hello from the kubelet"),
        ("working dir", "cwd", "/work"),
        ("uid:gid", "ids", "1000:1000"),
        ("hostname", "hostname", pod.config.hostname.as_str()),
    ] {
        let got = field(&out, key)?;
        ensure!(got == want, "{what}: got {got:?}, want {want:?}");
    }
    for want in [
        "nameserver 10.99.0.10",
        "search default.svc.cluster.local",
        "ndots:5",
    ] {
        ensure!(out.contains(want), "resolv.conf lacks {want:?}:\n{out}");
    }
    Ok(())
}

/// The read-only and read-write hostPath volumes, `/etc/hosts` and `/dev/termination-log`,
/// in one exec (see [`environment`]).
pub async fn mounts(suite: &Suite, handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    let pod = suite.main_pod(handler).await?;
    let v = volumes_paths(suite, &pod, "main");
    let out = suite
        .sh(
            &id,
            "cat /ro/data.txt; \
             if e=$( (echo x > /ro/new) 2>&1 ); then echo ro-writable; else echo \"ro-refused: $e\"; fi; \
             echo written in the pod > /rw/out.txt && echo bye > /dev/termination-log && \
             echo --hosts-- && cat /etc/hosts",
        )
        .await?;
    let (volumes, hosts) = out
        .split_once("--hosts--\n")
        .with_context(|| format!("the script stopped early: {out:?}"))?;
    ensure!(
        volumes.starts_with("from the host\n"),
        "read-only volume reads {volumes:?}"
    );
    ensure!(
        volumes.contains("ro-refused") && volumes.contains("Read-only file system"),
        "the read-only volume took a write or refused it otherwise: {volumes:?}"
    );
    let written =
        fs::read_to_string(v.rw.join("out.txt")).context("the rw volume's file on the host")?;
    ensure!(written == "written in the pod\n", "host sees {written:?}");
    ensure!(
        hosts == fs::read_to_string(&v.hosts)?,
        "/etc/hosts is {hosts:?}"
    );
    let msg = fs::read_to_string(&v.termination_log)?;
    ensure!(msg == "bye\n", "termination log on the host: {msg:?}");
    Ok(())
}

pub fn volumes_paths(suite: &Suite, pod: &Pod, name: &str) -> Volumes {
    let base = suite.dir.join("volumes").join(&pod.id).join(name);
    Volumes {
        ro: base.join("ro"),
        rw: base.join("rw"),
        hosts: base.join("etc-hosts"),
        termination_log: base.join("termination-log"),
    }
}

/// The CPU shares, CFS quota and memory limit the container's cgroup got (v1 or v2 files).
pub async fn resources(suite: &Suite, _handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    let (shares, quota, memory) = cgroup_limits(suite, &id).await?;
    ensure!(
        shares == "512" || shares == "20",
        "cpu shares/weight {shares:?} (want 512, or weight 20 on v2)"
    );
    ensure!(quota.starts_with("50000"), "cpu quota {quota:?}");
    ensure!(
        memory == MEMORY_LIMIT.to_string(),
        "memory limit {memory:?}"
    );
    Ok(())
}

/// `(cpu shares or weight, cfs quota, memory limit)` read inside the container.
pub async fn cgroup_limits(suite: &Suite, id: &str) -> Result<(String, String, String)> {
    let out = suite
        .sh(
            id,
            "c=/sys/fs/cgroup; if [ -f $c/cgroup.controllers ]; then \
             cat $c/cpu.weight $c/cpu.max $c/memory.max; else \
             cat $c/cpu/cpu.shares $c/cpu/cpu.cfs_quota_us $c/memory/memory.limit_in_bytes; fi",
        )
        .await?;
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    ensure!(lines.len() == 3, "cgroup files read {out:?}");
    Ok((lines[0].clone(), lines[1].clone(), lines[2].clone()))
}
