//! ContainerStatus after an exit (code, reason, the termination message the kubelet reads
//! from the host file) and after an OOM kill; ContainerStats / ListContainerStats with the
//! fields the kubelet reads; UpdateContainerResources.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::checks::container::{cgroup_limits, volumes};
use crate::cri::{container, Suite};

pub async fn exit_status(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let v = volumes(suite, &pod, "failing")?;
    let mut config = container(
        "failing",
        "echo 'it broke: disk on fire' > /dev/termination-log; exit 7",
    );
    config.mounts = vec![Mount {
        container_path: "/dev/termination-log".into(),
        host_path: v.termination_log.to_string_lossy().into_owned(),
        ..Default::default()
    }];
    let id = suite.run(&pod, config).await?;
    let status = suite
        .wait_exited(&id, Duration::from_secs(60) * super::patience(handler))
        .await?;
    ensure!(status.exit_code == 7, "exit code {}", status.exit_code);
    ensure!(status.reason == "Error", "reason {:?}", status.reason);
    // containerd stamps `started_at` when the start call returns and `finished_at` from the
    // exit event: a process that exits at once may finish a fraction of a millisecond
    // "before" it started (seen with runc). Both are set and within a second of each other
    // or in order.
    const CLOCK_SLACK_NS: i64 = 1_000_000_000;
    ensure!(
        status.started_at > 0 && status.finished_at >= status.started_at - CLOCK_SLACK_NS,
        "started {} finished {}",
        status.started_at,
        status.finished_at
    );
    let message = fs::read_to_string(&v.termination_log)?;
    ensure!(
        message == "it broke: disk on fire\n",
        "termination message {message:?}"
    );
    Ok(())
}

pub async fn oom_killed(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    // A string that doubles until the limit: the memory is touched by the process itself (no
    // kernel copy per byte, as `tail /dev/zero` needs: where guest ring 0 is emulated that took
    // over ten minutes to fill 16 MiB, this takes one page fault per page).
    let mut config = container("oom", "awk 'BEGIN { s = \"x\"; while (1) s = s s }'");
    let resources = config.linux.as_mut().unwrap().resources.as_mut().unwrap();
    resources.memory_limit_in_bytes = 16 << 20;
    let id = suite.run(&pod, config).await?;
    let status = suite
        .wait_exited(&id, Duration::from_secs(90) * super::patience(handler))
        .await?;
    ensure!(
        status.reason == "OOMKilled",
        "reason {:?} (exit code {})",
        status.reason,
        status.exit_code
    );
    ensure!(status.exit_code == 137, "exit code {}", status.exit_code);
    Ok(())
}

pub async fn stats(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let id = suite.container_id("main")?;
    // The writable layer's usage comes from a periodic collection (stats_collect_period): poll.
    let deadline = Instant::now() + Duration::from_secs(15) * super::patience(handler);
    loop {
        let s = suite
            .rt()
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .context("ContainerStats")?
            .into_inner()
            .stats
            .context("no stats")?;
        match check_stats(&s, &id) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let all = suite
        .rt()
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .context("ListContainerStats")?
        .into_inner()
        .stats;
    let main = all
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
        .context("ListContainerStats lacks the main container")?;
    check_stats(main, &id)
}

/// What the kubelet's summary API takes from a ContainerStats.
fn check_stats(s: &ContainerStats, id: &str) -> Result<()> {
    let attributes = s.attributes.as_ref().context("no attributes")?;
    ensure!(attributes.id == id, "attributes of {:?}", attributes.id);
    ensure!(
        attributes
            .metadata
            .as_ref()
            .is_some_and(|m| m.name == "main"),
        "metadata {:?}",
        attributes.metadata
    );
    let cpu = s.cpu.as_ref().context("no cpu stats")?;
    ensure!(cpu.timestamp > 0, "no cpu timestamp");
    let used = cpu.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value);
    ensure!(used > 0, "cpu usage_core_nano_seconds {used}");
    let memory = s.memory.as_ref().context("no memory stats")?;
    ensure!(memory.timestamp > 0, "no memory timestamp");
    let ws = memory.working_set_bytes.as_ref().map_or(0, |v| v.value);
    ensure!(ws > 0, "memory working_set_bytes {ws}");
    let fs = s
        .writable_layer
        .as_ref()
        .context("no writable layer stats")?;
    ensure!(fs.timestamp > 0, "no writable layer timestamp");
    ensure!(
        fs.fs_id.as_ref().is_some_and(|f| !f.mountpoint.is_empty()),
        "writable layer without a mountpoint"
    );
    ensure!(fs.used_bytes.is_some(), "writable layer without used_bytes");
    ensure!(
        fs.inodes_used.is_some(),
        "writable layer without inodes_used"
    );
    Ok(())
}

pub async fn update_resources(suite: &Suite, _handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    suite
        .rt()
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 256,
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("UpdateContainerResources")?;
    let (shares, quota, memory) = cgroup_limits(suite, &id).await?;
    ensure!(
        shares == "256" || shares == "10",
        "cpu shares/weight {shares:?} (want 256, or weight 10 on v2)"
    );
    ensure!(quota.starts_with("20000"), "cpu quota {quota:?}");
    ensure!(
        memory == (96u64 << 20).to_string(),
        "memory limit {memory:?}"
    );
    Ok(())
}
