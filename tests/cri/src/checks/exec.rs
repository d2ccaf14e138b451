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
    // The timeout is honoured: a sleep with a 2 s timeout comes back early, as an error, well
    // before the sleep could have ended by itself. containerd starts the 2 s only once the exec
    // has started, and starting a process takes up to `patience` times longer in a slow guest:
    // the sleep and the bound both scale by it (runc: `sleep 31` back within 10 s).
    let slow = super::patience(handler);
    let sleep = (31 * slow).to_string();
    let bound = Duration::from_secs(10) * slow;
    let started = Instant::now();
    let r = suite.exec_within(&id, &["sleep", &sleep], 2).await;
    let took = started.elapsed();
    ensure!(
        took < bound,
        "a 2 s timeout on `sleep {sleep}` returned after {took:?}"
    );
    match r {
        Err(e) => ensure!(
            format!("{e:#}").contains("timeout"),
            "timed-out exec failed otherwise: {e:#}"
        ),
        Ok(r) => ensure!(r.exit_code != 0, "timed-out exec exited 0"),
    }
    // The timed-out exec is killed, not left running.
    let deadline = Instant::now() + Duration::from_secs(10) * slow;
    let count = format!("ps -o args | grep -c '^sleep {sleep}$' || true");
    loop {
        let ps = suite.sh(&id, &count).await?;
        if ps.trim() == "0" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the timed-out `sleep {sleep}` still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
