//! Runs every CRI check for handlers `runc` and `rust-vm`, each against a private containerd of
//! its own, and prints the results table; fails if any check failed.

use std::time::Instant;

use rust_vm_cri_tests::{checks, cri::Suite};

/// The handlers the suite runs, in this order: `runc` (io.containerd.runc.v2) as the reference,
/// then `rust-vm` (io.containerd.rust-vm.v2, one microVM per pod). `RVM_CRI_HANDLERS=a,b`
/// runs only those.
const HANDLERS: &[&str] = &["runc", "rust-vm"];

#[test]
#[ignore = "needs root and containerd's CRI plugin"]
fn cri_suite() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut outcomes = Vec::new();
    let only = std::env::var("RVM_CRI_HANDLERS").ok();
    let handlers = HANDLERS.iter().filter(|h| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == **h))
    });
    for handler in handlers {
        let handler_started = Instant::now();
        rt.block_on(async {
            let suite = Suite::start(handler)
                .await
                .expect("start containerd with CRI");
            outcomes.extend(checks::run_all(&suite, handler).await);
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
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| format!("{} ({})", o.check, o.handler))
        .collect();
    assert!(failed.is_empty(), "failed checks: {}", failed.join(", "));
}
