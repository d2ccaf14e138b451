//! The CRI client and the kubelet-shaped requests the checks send: a `Suite` is one private
//! containerd plus a gRPC channel to its CRI plugin, and builders for the pod and container
//! configurations the kubelet would send.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::containerd::Containerd;
use crate::images::BUSYBOX_IMAGE;

/// One containerd (started once for all checks of a handler) and a channel to it.
pub struct Suite {
    pub ctd: tokio::sync::Mutex<Containerd>,
    pub dir: PathBuf,
    pub netns: PathBuf,
    pub netns_name: String,
    pub cgroup_root: String,
    channel: Channel,
    /// The pod most checks add their containers to (made by the first check that needs it).
    pub pod: tokio::sync::Mutex<Option<Pod>>,
    /// Why the main pod could not be made, once RunPodSandbox failed for it.
    pod_failure: tokio::sync::Mutex<Option<String>>,
    /// The handler's [`crate::checks::patience`]: ExecSync timeouts scale by it.
    pub patience: u32,
    /// Containers the checks made, by name, for later checks to use.
    pub containers: std::sync::Mutex<HashMap<String, String>>,
}

/// A pod sandbox as the kubelet keeps it: its id and the config it was created with (every
/// CreateContainer carries it again).
#[derive(Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub handler: String,
}

impl Pod {
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }
}

impl Suite {
    pub async fn start(name: &str) -> Result<Suite> {
        let ctd = tokio::task::spawn_blocking({
            let name = name.to_string();
            move || Containerd::start(&name)
        })
        .await??;
        let channel = connect(ctd.socket.clone()).await?;
        let suite = Suite {
            dir: ctd.dir.clone(),
            netns: ctd.netns.path(),
            netns_name: ctd.netns.name.clone(),
            cgroup_root: ctd.cgroup_root.clone(),
            ctd: tokio::sync::Mutex::new(ctd),
            channel,
            pod: tokio::sync::Mutex::new(None),
            pod_failure: tokio::sync::Mutex::new(None),
            patience: crate::checks::patience(name),
            containers: Default::default(),
        };
        suite.wait_ready().await?;
        Ok(suite)
    }

    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Polls the CRI `Status` until RuntimeReady and NetworkReady (the CNI config loaded).
    pub async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match self.rt().status(StatusRequest { verbose: false }).await {
                Ok(r) => {
                    let conditions = r.into_inner().status.unwrap_or_default().conditions;
                    if conditions.len() >= 2 && conditions.iter().all(|c| c.status) {
                        return Ok(());
                    }
                    format!("{conditions:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the CRI plugin is not ready: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn log_tail(&self, lines: usize) -> String {
        self.ctd.lock().await.log_tail(lines)
    }

    /// A pod's configuration as the kubelet builds it, `resources` the sum of its containers'
    /// limits ([`pod_resources`]); makes its log directory (the kubelet does, before
    /// RunPodSandbox).
    pub fn pod_config(
        &self,
        name: &str,
        resources: LinuxContainerResources,
    ) -> Result<PodSandboxConfig> {
        let uid = format!("{name}-uid-{}", std::process::id());
        let log_directory = self.dir.join(format!("pods/default_{name}_{uid}"));
        fs::create_dir_all(&log_directory)?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            dns_config: Some(DnsConfig {
                servers: vec!["10.99.0.10".into()],
                searches: vec![
                    "default.svc.cluster.local".into(),
                    "svc.cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), "default".into()),
                ("io.kubernetes.pod.uid".into(), uid.clone()),
                ("app".into(), "cri-suite".into()),
            ]),
            annotations: HashMap::from([("kubernetes.io/config.source".into(), "api".into())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{uid}", self.cgroup_root),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespace_options()),
                    seccomp: Some(unconfined()),
                    ..Default::default()
                }),
                overhead: Some(pod_overhead()),
                resources: Some(resources),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub async fn run_pod(
        &self,
        handler: &str,
        name: &str,
        resources: LinuxContainerResources,
    ) -> Result<Pod> {
        let config = self.pod_config(name, resources)?;
        let id = self
            .rt()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod {
            id,
            config,
            handler: handler.into(),
        })
    }

    /// The shared pod for `handler`, made on first use.
    pub async fn main_pod(&self, handler: &str) -> Result<Pod> {
        let mut pod = self.pod.lock().await;
        if let Some(p) = pod.as_ref().filter(|p| p.handler == handler) {
            return Ok(p.clone());
        }
        // A pod that could not be made is not tried again by every later check (for a VM
        // handler each try is a VM boot).
        let mut failure = self.pod_failure.lock().await;
        if let Some(reason) = failure.as_ref() {
            bail!("the main pod could not be made: {reason}");
        }
        let resources = crate::checks::container::main_pod_resources();
        match self
            .run_pod(handler, &format!("main-{handler}"), resources)
            .await
        {
            Ok(p) => {
                *pod = Some(p.clone());
                Ok(p)
            }
            Err(e) => {
                *failure = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    pub fn remember(&self, name: &str, id: &str) {
        self.containers
            .lock()
            .unwrap()
            .insert(name.into(), id.into());
    }

    /// The id of a container an earlier check made.
    pub fn container_id(&self, name: &str) -> Result<String> {
        self.containers
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .with_context(|| format!("no container {name:?}: the check making it failed"))
    }

    /// The `info` JSON of a verbose ContainerStatus (pid, runtime spec, ...).
    pub async fn container_info(&self, id: &str) -> Result<serde_json::Value> {
        let info = self
            .rt()
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .context("ContainerStatus (verbose)")?
            .into_inner()
            .info;
        serde_json::from_str(info.get("info").context("no info in the verbose status")?)
            .context("parse the verbose container info")
    }

    pub async fn pod_status(&self, id: &str) -> Result<PodSandboxStatusResponse> {
        Ok(self
            .rt()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .context("PodSandboxStatus")?
            .into_inner())
    }

    pub async fn create(&self, pod: &Pod, config: ContainerConfig) -> Result<String> {
        let name = config.metadata.as_ref().map(|m| m.name.clone());
        Ok(self
            .rt()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .with_context(|| format!("CreateContainer {name:?}"))?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        self.rt()
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .context("StartContainer")?;
        Ok(())
    }

    /// CreateContainer then StartContainer.
    pub async fn run(&self, pod: &Pod, config: ContainerConfig) -> Result<String> {
        let id = self.create(pod, config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    pub async fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.rt()
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .context("ContainerStatus without a status")
    }

    /// Polls ContainerStatus until the container has exited.
    pub async fn wait_exited(&self, id: &str, limit: Duration) -> Result<ContainerStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(id).await?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "container {id} did not exit within {limit:?} (state {})",
                status.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ExecSync with a timeout of `timeout` seconds times the handler's patience
    /// ([`crate::checks::patience`]).
    pub async fn exec(&self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse> {
        self.exec_within(id, cmd, timeout * i64::from(self.patience))
            .await
    }

    /// ExecSync with a timeout of exactly `timeout` seconds.
    pub async fn exec_within(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse> {
        Ok(self
            .rt()
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .with_context(|| format!("ExecSync {cmd:?}"))?
            .into_inner())
    }

    /// `sh -c SCRIPT` in the container; its stdout, or an error with its exit code and stderr.
    pub async fn sh(&self, id: &str, script: &str) -> Result<String> {
        let r = self.exec(id, &["sh", "-c", script], 30).await?;
        ensure!(
            r.exit_code == 0,
            "`{script}` exited {}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    }

    /// StopContainer with no grace period (SIGKILL at once).
    pub async fn stop_now(&self, id: &str) -> Result<()> {
        self.rt()
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: 0,
            })
            .await
            .with_context(|| format!("StopContainer {id}"))?;
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        self.rt()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .context("StopPodSandbox")?;
        self.rt()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }
}

/// A gRPC channel to containerd's socket.
async fn connect(socket: PathBuf) -> Result<Channel> {
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connect to containerd's CRI socket")
}

async fn remove_all_pods(mut rt: RuntimeServiceClient<Channel>) -> Result<()> {
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    for pod in pods {
        let id = pod.id;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .context("StopPodSandbox")?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .context("RemovePodSandbox")?;
    }
    Ok(())
}

/// Whatever way the suite ends (a check failing or panicking), the pods still there are
/// stopped and removed through the CRI first, so that the CNI plugin and the shims clean up
/// after themselves; `Containerd`'s drop then kills whatever is left.
impl Drop for Suite {
    fn drop(&mut self) {
        let socket = self.ctd.get_mut().socket.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                // A VM pod's stop waits for its guest: minutes on a PVM host.
                tokio::time::timeout(Duration::from_secs(300), async {
                    remove_all_pods(RuntimeServiceClient::new(connect(socket).await?)).await
                })
                .await
                .context("timed out")?
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("removing the pods left over through the CRI failed: {e:#}");
        }
    }
}

/// The value of the `KEY=value` line of a script's output (the checks that read several things
/// in one exec print each so).
pub fn field<'a>(out: &'a str, key: &str) -> Result<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= line in {out:?}"))
}

/// The pod-level resources the kubelet sends with RunPodSandbox (Kubernetes 1.23 and later): the
/// sums of the containers' CPU and memory limits, as a CFS quota over the default 100 ms period
/// and bytes (0: no limit), with the CPU shares of the containers' requests (2: none).
pub fn pod_resources(cpu_quota: i64, memory: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota,
        cpu_shares: 2,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

/// The RuntimeClass's `overhead.podFixed` (docs/kubernetes/runtimeclass.yaml: 250m, 64Mi), which
/// the kubelet passes beside the pod's resources.
fn pod_overhead() -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 25_000,
        cpu_shares: 256,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    }
}

/// A container configuration as the kubelet builds it: `sh -c SCRIPT` in busybox, logging to
/// `NAME/0.log` in the pod's log directory.
pub fn container(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX_IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec![script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("io.kubernetes.container.name".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                // The kubelet repeats the pod's namespace options on every container.
                namespace_options: Some(pod_namespace_options()),
                seccomp: Some(unconfined()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The namespace options of the suite's pods (network and IPC the pod's, PID each container's),
/// which the kubelet sends with the pod and again with each container.
fn pod_namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// No seccomp profile, as the kubelet asks by default.
fn unconfined() -> SecurityProfile {
    SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    }
}
