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
    /// The timestamp with its fraction written out to nanoseconds ([`fixed_width`]), so that
    /// entries of one time zone compare as strings in time order.
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
            let time = fixed_width(time)?;
            ensure!(
                stream == "stdout" || stream == "stderr",
                "stream {stream:?}"
            );
            ensure!(tag == "P" || tag == "F", "tag {tag:?}");
            Ok(Entry {
                time,
                stream: stream.into(),
                partial: tag == "P",
                content: parts.next().unwrap_or("").into(),
            })
        })
        .collect()
}

/// An RFC 3339 timestamp with its fraction of a second padded to nine digits. containerd writes
/// RFC3339Nano, which drops the fraction's trailing zeros: as written, `…:05.12Z` sorts after
/// `…:05.123Z` ('Z' > '3') though it is earlier.
fn fixed_width(time: &str) -> Result<String> {
    let b = time.as_bytes();
    ensure!(
        time.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':',
        "timestamp {time:?} is not RFC 3339"
    );
    let (seconds, rest) = time.split_at(19);
    let (fraction, zone) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len())),
        None => ("", rest),
    };
    ensure!(
        fraction.len() <= 9 && !zone.is_empty(),
        "timestamp {time:?} is not RFC 3339"
    );
    Ok(format!("{seconds}.{fraction:0<9}{zone}"))
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
    if let Some(w) = entries.windows(2).find(|w| w[0].time > w[1].time) {
        bail!("timestamps go back: {} then {}", w[0].time, w[1].time);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_compare_in_time_order_once_fixed_width() {
        let earlier = fixed_width("2026-12-07T19:00:05.12Z").unwrap();
        let later = fixed_width("2026-12-07T19:00:05.123Z").unwrap();
        assert!(earlier < later, "{earlier} < {later}");
        assert_eq!(earlier, "2026-12-07T19:00:05.120000000Z");
        assert_eq!(
            fixed_width("2026-12-07T19:00:05+01:00").unwrap(),
            "2026-12-07T19:00:05.000000000+01:00"
        );
    }

    #[test]
    fn a_timestamp_that_is_not_rfc_3339_is_an_error() {
        for bad in [
            "19:00:05",
            "2026-12-07T19:00:05",
            "2026-12-07T19:00:05.1234567891Z",
        ] {
            assert!(fixed_width(bad).is_err(), "{bad}");
        }
    }
}
