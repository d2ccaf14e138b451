//! The checks, each a function of the suite and the runtime handler (`runc` or `rust-vm`),
//! run in order against one containerd; a check's error is its failure reason.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cri::Suite;

pub mod container;
mod exec;
mod image;
mod lifecycle;
pub mod logs;
pub mod pod;
mod status;
mod streaming;

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

pub struct Check {
    pub name: &'static str,
    pub run: for<'a> fn(&'a Suite, &'a str) -> CheckFuture<'a>,
}

macro_rules! check {
    ($name:literal, $f:path) => {
        Check {
            name: $name,
            run: |suite, handler| Box::pin($f(suite, handler)),
        }
    };
}

/// Every check, in the order they run (later ones use the pod the first ones made).
pub fn all() -> Vec<Check> {
    vec![
        check!("ImageStatus", image::image_status),
        check!("RunPodSandbox", pod::run_pod_sandbox),
        check!("CreateContainer", container::create_container),
        check!("StartContainer", container::start_container),
        check!("PodSizing", pod::pod_sizing),
        check!("ContainerEnvironment", container::environment),
        check!("ContainerMounts", container::mounts),
        check!("ContainerResources", container::resources),
        check!("ExecSync", exec::exec_sync),
        check!("ContainerLogFile", logs::log_file),
        check!("ReopenContainerLog", logs::reopen_log),
        check!("ExecTTY", streaming::exec_tty),
        check!("AttachTTY", streaming::attach_tty),
        check!("PortForward", streaming::port_forward),
        check!("ContainerStatusExit", status::exit_status),
        check!("ContainerStatusOOMKilled", status::oom_killed),
        check!("ContainerStats", status::stats),
        check!("UpdateContainerResources", status::update_resources),
        check!("StopContainerGracePeriod", lifecycle::stop_grace),
        check!("TwoPods", lifecycle::two_pods),
        check!("ContainerdRestart", lifecycle::containerd_restart),
        check!("StopRemovePodSandbox", pod::stop_remove_pod_sandbox),
    ]
}

pub struct Outcome {
    pub check: &'static str,
    pub handler: String,
    pub result: Result<(), String>,
    pub took: Duration,
}

/// How many times longer than under runc a guest step (a process starting, a signal handled,
/// an exit reported) may take under `handler`: 1 for runc; for rust-vm, whose guest ring 0 is
/// instruction-emulated on PVM hosts, a process start took 1 to 14 s there depending on what else
/// the host ran. Waits for the pod's processes scale by it; bounds that are the point of a check
/// (a timeout honoured, a grace period not cut short) say how they use it.
pub fn patience(handler: &str) -> u32 {
    if crate::checks::pod::is_vm(handler) {
        10
    } else {
        1
    }
}

/// How long one check may take before it counts as failed: a rust-vm check may boot a pod's
/// microVM, which takes minutes where guest ring 0 is instruction-emulated (PVM hosts).
fn check_limit(handler: &str) -> Duration {
    if handler == "rust-vm" {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(180)
    }
}

/// Runs every check for `handler` (those named in `only`, when given), adding each outcome to
/// `outcomes` as it ends; a failure's reason ends with containerd's log tail.
pub async fn run_all(
    suite: &Suite,
    handler: &str,
    only: Option<&[String]>,
    outcomes: &mut Vec<Outcome>,
) {
    let wanted = |name: &str| only.is_none_or(|names| names.iter().any(|n| n == name));
    for check in all().into_iter().filter(|c| wanted(c.name)) {
        let started = Instant::now();
        let limit = check_limit(handler);
        let result = match tokio::time::timeout(limit, (check.run)(suite, handler)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("timed out after {limit:?}")),
        };
        let result = match result {
            Ok(()) => Ok(()),
            Err(reason) => {
                let tail = suite.log_tail(15).await;
                eprintln!(
                    "check {} ({handler}) FAILED: {reason}\n--- containerd log tail ---\n{tail}\n---",
                    check.name
                );
                Err(reason)
            }
        };
        outcomes.push(Outcome {
            check: check.name,
            handler: handler.into(),
            result,
            took: started.elapsed(),
        });
    }
}

/// The results as a Markdown table: check, handler, pass/fail, reason.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out =
        String::from("| check | handler | result | time | reason |\n|---|---|---|---|---|\n");
    for o in outcomes {
        let (result, reason) = match &o.result {
            Ok(()) => ("pass", String::new()),
            Err(r) => ("FAIL", r.replace('\n', " ").replace('|', "\\|")),
        };
        out += &format!(
            "| {} | {} | {result} | {:.1} s | {reason} |\n",
            o.check,
            o.handler,
            o.took.as_secs_f64()
        );
    }
    out
}
