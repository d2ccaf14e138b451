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
        rt.block_on(async {
            let suite = Suite::start(handler)
                .await
                .expect("start containerd with CRI");
            outcomes.extend(checks::run_all(&suite, handler, only).await);
            // Dropping the suite removes what the checks left and stops containerd.
        });
        println!(
            "handler {handler}: {:.0} s",
            handler_started.elapsed().as_secs_f64()
        );
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
