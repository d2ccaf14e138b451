//! The CRI log file (`TIMESTAMP STREAM TAG CONTENT`, long lines split into `P` pieces ended by
//! an `F`) and ReopenContainerLog after the kubelet's rotation (rename, then reopen).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1::*;

use crate::cri::{container, Suite};

/// One parsed CRI log line.
#[derive(Debug)]
pub struct Entry {
    pub time: String,
    pub stream: String,
    pub partial: bool,
    pub content: String,
}

pub fn parse(log: &str) -> Result<Vec<Entry>> {
    log.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("malformed log line {line:?}");
            };
            let b = time.as_bytes();
            ensure!(
                time.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':',
                "timestamp {time:?} is not RFC 3339"
            );
            ensure!(
                stream == "stdout" || stream == "stderr",
                "stream {stream:?}"
            );
            ensure!(tag == "P" || tag == "F", "tag {tag:?}");
            Ok(Entry {
                time: time.into(),
                stream: stream.into(),
                partial: tag == "P",
                content: parts.next().unwrap_or("").into(),
            })
        })
        .collect()
}

/// Whole lines per stream: partial pieces joined up to their `F`.
fn lines(entries: &[Entry], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for e in entries.iter().filter(|e| e.stream == stream) {
        current += &e.content;
        if !e.partial {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

pub async fn log_file(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let script = "echo out-line; echo err-line >&2; \
                  head -c 40000 /dev/zero | tr '\\0' a; echo; echo done";
    let id = suite.run(&pod, container("logger", script)).await?;
    let status = suite
        .wait_exited(&id, Duration::from_secs(60) * super::patience(handler))
        .await?;
    ensure!(status.exit_code == 0, "exit code {}", status.exit_code);
    ensure!(status.reason == "Completed", "reason {:?}", status.reason);
    let log = fs::read_to_string(&status.log_path).context("read the container log")?;
    let entries = parse(&log)?;
    ensure!(
        entries.windows(2).all(|w| w[0].time <= w[1].time),
        "timestamps go back"
    );
    let stdout = lines(&entries, "stdout");
    let stderr = lines(&entries, "stderr");
    ensure!(stderr == ["err-line"], "stderr lines {stderr:?}");
    ensure!(
        stdout.len() == 3 && stdout[0] == "out-line" && stdout[2] == "done",
        "stdout lines {:?}",
        stdout.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    ensure!(
        stdout[1].len() == 40000 && stdout[1].bytes().all(|b| b == b'a'),
        "the long line came back as {} bytes",
        stdout[1].len()
    );
    let pieces = entries.iter().filter(|e| e.partial).count();
    ensure!(
        pieces >= 2,
        "the 40000-byte line was split into {pieces} partial entries"
    );
    Ok(())
}

/// Polls `path` until it holds a line containing `needle`; returns its text.
pub async fn wait_for_line(path: &Path, needle: &str, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        ensure!(
            Instant::now() < deadline,
            "{path:?} has no {needle:?} within {limit:?}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn reopen_log(suite: &Suite, handler: &str) -> Result<()> {
    let pod = suite.main_pod(handler).await?;
    let script = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    let id = suite.run(&pod, container("ticker", script)).await?;
    let checked = check_reopen(suite, handler, &pod, &id).await;
    // Stopped whatever the outcome: a busy loop left running slows every later check (in a VM
    // pod each of its `sleep`s is a process start in the emulated guest).
    let stopped = suite.stop_now(&id).await;
    checked.and(stopped)
}

async fn check_reopen(suite: &Suite, handler: &str, pod: &crate::cri::Pod, id: &str) -> Result<()> {
    let path = pod.log_dir().join("ticker/0.log");
    let limit = Duration::from_secs(30) * super::patience(handler);
    wait_for_line(&path, "tick 3", limit).await?;
    let rotated = path.with_extension("log.1");
    fs::rename(&path, &rotated)?;
    suite
        .rt()
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.into(),
        })
        .await
        .context("ReopenContainerLog")?;
    let new = wait_for_line(&path, "tick", limit).await?;
    let last_old = last_tick(&fs::read_to_string(&rotated)?)?;
    let first_new = parse(&new)?
        .first()
        .map(|e| e.content.clone())
        .unwrap_or_default();
    let first_new: u64 = first_new.trim_start_matches("tick ").parse()?;
    ensure!(
        first_new > last_old,
        "the reopened log starts at tick {first_new}, the rotated one ended at {last_old}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        last_tick(&fs::read_to_string(&rotated)?)? == last_old,
        "the rotated file still grows"
    );
    Ok(())
}

fn last_tick(log: &str) -> Result<u64> {
    let entries = parse(log)?;
    let last = entries.last().context("empty log")?;
    Ok(last.content.trim_start_matches("tick ").parse()?)
}
