//! Exec and Attach with a TTY, and PortForward, through containerd's streaming server as
//! `kubectl exec -it`, `kubectl attach -it` and `kubectl port-forward` reach it via the kubelet.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_cri::v1::*;

use crate::cri::{container, Suite};
use crate::stream::{Channels, STATUS, STDIN, STDOUT};

const EXEC_PROTOCOL: &str = "v4.channel.k8s.io";
const LIMIT: Duration = Duration::from_secs(30);

pub async fn exec_tty(suite: &Suite, handler: &str) -> Result<()> {
    let limit = LIMIT * super::patience(handler);
    let id = suite.container_id("main")?;
    let url = suite
        .rt()
        .exec(ExecRequest {
            container_id: id,
            cmd: vec!["sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await
        .context("Exec")?
        .into_inner()
        .url;
    let mut ch = Channels::open(&suite.netns, &url, EXEC_PROTOCOL).await?;
    ensure!(ch.protocol == EXEC_PROTOCOL, "negotiated {:?}", ch.protocol);
    ch.resize(100, 40).await?;
    ch.send(STDIN, b"stty size; tty; echo hi-$((40+2)); exit 5\n")
        .await?;
    let out = ch.read_to_close(limit).await?;
    let stdout = String::from_utf8_lossy(&out[STDOUT as usize]);
    ensure!(stdout.contains("hi-42"), "stdout {stdout:?}");
    ensure!(
        stdout.contains("40 100"),
        "terminal size not 40x100: {stdout:?}"
    );
    ensure!(stdout.contains("/dev/pts/"), "no TTY: {stdout:?}");
    let status = String::from_utf8_lossy(&out[STATUS as usize]);
    let status: serde_json::Value =
        serde_json::from_str(&status).with_context(|| format!("status {status:?}"))?;
    let code = status["details"]["causes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
        .and_then(|c| c["message"].as_str());
    ensure!(
        status["status"] == "Failure" && code == Some("5"),
        "exit status {status}"
    );
    Ok(())
}

pub async fn attach_tty(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let mut config = container("interactive", "");
    config.command = vec!["sh".into()];
    config.args = vec![];
    config.tty = true;
    config.stdin = true;
    let id = suite.run(&pod, config).await?;
    let url = suite
        .rt()
        .attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .context("Attach")?
        .into_inner()
        .url;
    let mut ch = Channels::open(&suite.netns, &url, EXEC_PROTOCOL).await?;
    ch.send(STDIN, b"echo attached-$((6*7))\n").await?;
    ch.read_until(STDOUT, "attached-42", LIMIT * super::patience(handler))
        .await?;
    ch.close().await?;
    // Detaching leaves the container running; its shell still answers.
    let status = suite.status(&id).await?;
    ensure!(
        status.state == ContainerState::ContainerRunning as i32,
        "detaching stopped the container (state {})",
        status.state
    );
    suite.sh(&id, "true").await?;
    Ok(())
}

pub async fn port_forward(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let web = container(
        "pf-web",
        "mkdir -p /www && echo port-forward works > /www/index.html && \
         exec httpd -f -p 8081 -h /www",
    );
    let id = suite.run(&pod, web).await?;
    let limit = LIMIT * super::patience(handler);
    let deadline = Instant::now() + limit;
    while suite
        .exec(&id, &["wget", "-qO/dev/null", "http://127.0.0.1:8081/"], 5)
        .await?
        .exit_code
        != 0
    {
        ensure!(
            Instant::now() < deadline,
            "httpd does not answer in the pod"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = suite
        .rt()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8081],
        })
        .await
        .context("PortForward")?
        .into_inner()
        .url;
    let mut ch =
        Channels::open(&suite.netns, &url, "v4.channel.k8s.io, portforward.k8s.io").await?;
    ch.send(0, b"GET /index.html HTTP/1.0\r\n\r\n").await?;
    let out = ch.read_to_close(limit).await?;
    // Each channel starts with the port, u16 little endian.
    let port = 8081u16.to_le_bytes();
    ensure!(
        out[0].starts_with(&port),
        "data channel did not start with the port"
    );
    let data = String::from_utf8_lossy(&out[0][2..]);
    ensure!(
        data.starts_with("HTTP/1.") && data.contains("port-forward works"),
        "response {data:?}"
    );
    let errors = String::from_utf8_lossy(out[1].get(2..).unwrap_or_default());
    ensure!(errors.is_empty(), "error channel: {errors}");
    Ok(())
}
