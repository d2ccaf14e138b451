//! StopContainer's grace period, two pods at once (talking over the CNI bridge), and a
//! containerd restart under a running pod.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::checks::container::waits_for_term;
use crate::checks::pod::Footprint;
use crate::cri::{container, pod_resources, Suite};

async fn stop(suite: &Suite, id: &str, timeout: i64) -> Result<Duration> {
    let started = Instant::now();
    suite
        .rt()
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .context("StopContainer")?;
    Ok(started.elapsed())
}

/// SIGTERM first: a container that exits on it stops at once; one that ignores it is killed
/// (SIGKILL) when the grace period ends, not before.
pub async fn stop_grace(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let graceful = container("graceful", &waits_for_term("ready"));
    // SIGTERM goes to the shell, PID 1, which ignores it; its `sleep` never sees it.
    let stubborn = container(
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 3600; done",
    );
    let g = suite.run(&pod, graceful).await?;
    let s = match suite.run(&pod, stubborn).await {
        Ok(s) => s,
        Err(e) => {
            let _ = suite.stop_now(&g).await;
            return Err(e);
        }
    };
    let checked = check_stops(suite, handler, &pod, &g, &s).await;
    // Both stopped whatever the outcome: busy loops left running slow every later check.
    let stopped = suite.stop_now(&g).await.and(suite.stop_now(&s).await);
    checked.and(stopped)
}

async fn check_stops(
    suite: &Suite,
    handler: &str,
    pod: &crate::cri::Pod,
    g: &str,
    s: &str,
) -> Result<()> {
    // A guest step may take `patience` times longer; the grace period given to the trapping
    // container grows with it (it must exit by itself, 0, not be killed at the end of it).
    let slow = super::patience(handler);
    for (id, name) in [(g, "graceful"), (s, "stubborn")] {
        let log = pod.log_dir().join(format!("{name}/0.log"));
        crate::checks::logs::wait_for_line(&log, "ready", Duration::from_secs(30) * slow).await?;
        ensure!(
            suite.status(id).await?.state == ContainerState::ContainerRunning as i32,
            "{name} is not running"
        );
    }
    let took = stop(suite, g, 10 * i64::from(slow)).await?;
    ensure!(
        took < Duration::from_secs(5) * slow,
        "graceful stop took {took:?}"
    );
    let status = suite.status(g).await?;
    ensure!(
        status.exit_code == 0,
        "graceful exit code {}",
        status.exit_code
    );
    let log = std::fs::read_to_string(&status.log_path)?;
    ensure!(log.contains("got TERM"), "no SIGTERM seen: {log:?}");
    // Not before the 2 s grace period ended (whatever the handler); the kill and its exit
    // reported within 6 s (a guest step) after it.
    let took = stop(suite, s, 2).await?;
    ensure!(
        took >= Duration::from_secs(2)
            && took < Duration::from_secs(2) + Duration::from_secs(6) * slow,
        "stopping a SIGTERM-ignoring container with a 2 s grace took {took:?}"
    );
    let status = suite.status(s).await?;
    ensure!(
        status.exit_code == 137,
        "stubborn exit code {}",
        status.exit_code
    );
    Ok(())
}

/// A second pod next to the main one: both ready with their own IPs; the main pod fetches a
/// page from the second over the bridge; removing the second leaves nothing of it.
pub async fn two_pods(suite: &Suite, handler: &str) -> Result<()> {
    let main = suite.main_pod(handler).await?;
    let main_id = suite.container_id("main")?;
    // Its container declares no limits: the kubelet sends zero sums.
    let second = suite
        .run_pod(handler, &format!("second-{handler}"), pod_resources(0, 0))
        .await?;
    let web = container(
        "web",
        "mkdir -p /www && echo second pod says hi > /www/index.html && \
         exec httpd -f -p 8080 -h /www",
    );
    suite.run(&second, web).await?;
    let ip_of = |s: PodSandboxStatusResponse| {
        s.status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    };
    let ip_main = ip_of(suite.pod_status(&main.id).await?);
    let ip_second = ip_of(suite.pod_status(&second.id).await?);
    ensure!(ip_main != ip_second, "both pods have IP {ip_main}");
    let deadline = Instant::now() + Duration::from_secs(30) * super::patience(handler);
    let url = format!("http://{ip_second}:8080/index.html");
    loop {
        let r = suite.exec(&main_id, &["wget", "-qO-", &url], 10).await?;
        if r.exit_code == 0 {
            let page = String::from_utf8_lossy(&r.stdout);
            ensure!(page == "second pod says hi\n", "fetched {page:?}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "wget {url} from the main pod: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let footprint = Footprint::of(suite, &second).await?;
    suite.remove_pod(&second.id).await?;
    footprint.assert_gone(suite).await
}

/// containerd restarts (SIGTERM, start again) under the running main pod: the pod and its
/// container stay, exec still works and a new container starts.
pub async fn containerd_restart(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let id = suite.container_id("main")?;
    let pid_before = suite.container_info(&id).await?["pid"].as_u64();
    suite.ctd.lock().await.restart()?;
    suite.wait_ready().await?;
    let status = suite
        .pod_status(&pod.id)
        .await?
        .status
        .context("no pod status")?;
    ensure!(
        status.state == PodSandboxState::SandboxReady as i32,
        "the pod is not READY after the restart"
    );
    let c = suite.status(&id).await?;
    ensure!(
        c.state == ContainerState::ContainerRunning as i32,
        "main is not RUNNING after the restart (state {})",
        c.state
    );
    let pid_after = suite.container_info(&id).await?["pid"].as_u64();
    ensure!(
        pid_before == pid_after,
        "main's pid {pid_before:?} became {pid_after:?}"
    );
    let out = suite.sh(&id, "echo still here").await?;
    ensure!(out == "still here\n", "exec after the restart: {out:?}");
    let new = suite
        .run(&pod, container("after-restart", "echo fine"))
        .await?;
    let s = suite
        .wait_exited(&new, Duration::from_secs(60) * super::patience(handler))
        .await?;
    ensure!(s.exit_code == 0, "a new container exited {}", s.exit_code);
    Ok(())
}
