//! ExecSync as the kubelet's exec probes use it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::cri::Suite;

pub async fn exec_sync(suite: &Suite, handler: &str) -> Result<()> {
    let id = suite.container_id("main")?;
    let r = suite
        .exec(
            &id,
            &["sh", "-c", "echo to stdout; echo to stderr >&2; exit 3"],
            10,
        )
        .await?;
    ensure!(
        r.stdout == b"to stdout\n",
        "stdout {:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    ensure!(
        r.stderr == b"to stderr\n",
        "stderr {:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    ensure!(r.exit_code == 3, "exit code {}", r.exit_code);
    // The timeout is honoured: a 31 s sleep with a 2 s timeout comes back early, as an error
    // (within 10 s; in a slow guest before the sleep could have ended).
    let bound = Duration::from_secs(if super::patience(handler) > 1 { 30 } else { 10 });
    let started = Instant::now();
    let r = suite.exec_within(&id, &["sleep", "31"], 2).await;
    let took = started.elapsed();
    ensure!(took < bound, "a 2 s timeout returned after {took:?}");
    match r {
        Err(e) => ensure!(
            format!("{e:#}").contains("timeout"),
            "timed-out exec failed otherwise: {e:#}"
        ),
        Ok(r) => ensure!(r.exit_code != 0, "timed-out exec exited 0"),
    }
    // The timed-out exec is killed, not left running.
    let deadline = Instant::now() + Duration::from_secs(10) * super::patience(handler);
    loop {
        let ps = suite
            .sh(&id, "ps -o args | grep -c '^sleep 31' || true")
            .await?;
        if ps.trim() == "0" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the timed-out `sleep 31` still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
