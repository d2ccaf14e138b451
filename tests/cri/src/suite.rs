//! One run of the suite: every check against each handler in turn, each handler with a private
//! containerd of its own, and the results table.

use std::time::Instant;

use crate::checks::{self, Outcome};
use crate::cri::Suite;

/// The handlers there are, in the order a run takes them: `runc` (io.containerd.runc.v2) as
/// the reference, then `rust-vm` (io.containerd.rust-vm.v2, one microVM per pod).
pub const HANDLERS: &[&str] = &["runc", "rust-vm"];

/// Runs every check for each of `handlers`, prints each handler's time and the table, and
/// returns the outcomes.
pub fn run(handlers: &[&str]) -> Vec<Outcome> {
    run_some(handlers, None)
}

/// As [`run`], with only the checks named in `only` (all when `None`), in the suite's order.
pub fn run_some(handlers: &[&str], only: Option<&[String]>) -> Vec<Outcome> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut outcomes = Vec::new();
    for handler in handlers {
        let handler_started = Instant::now();
        let interrupted = rt.block_on(async {
            let suite = Suite::start(handler)
                .await
                .expect("start containerd with CRI");
            tokio::select! {
                () = checks::run_all(&suite, handler, only, &mut outcomes) => None,
                signal = interruption() => Some(signal),
            }
            // Dropping the suite removes what the checks left and stops containerd.
        });
        println!(
            "handler {handler}: {:.0} s",
            handler_started.elapsed().as_secs_f64()
        );
        if let Some(signal) = interrupted {
            eprintln!("cri-suite: {signal}: stopped the checks of {handler} and cleaned up");
            outcomes.push(Outcome {
                check: "(interrupted)",
                handler: handler.to_string(),
                result: Err(format!("{signal} during the checks")),
                took: handler_started.elapsed(),
            });
            break;
        }
    }
    println!(
        "\nCRI suite ({:.0} s, {}):\n{}",
        started.elapsed().as_secs_f64(),
        rust_vm_test_support::cpu_model(),
        checks::table(&outcomes)
    );
    outcomes
}

/// `check (handler)` of every failed outcome.
pub fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| format!("{} ({})", o.check, o.handler))
        .collect()
}

/// Resolves with the signal's name at the first SIGINT or SIGTERM (never, where the handlers
/// cannot be installed).
async fn interruption() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
