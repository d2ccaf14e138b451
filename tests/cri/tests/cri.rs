//! Runs every CRI check for handler `runc` against one private containerd and prints the
//! results table; fails if any check failed.

use std::time::Instant;

use rust_vm_cri_tests::{checks, cri::Suite};

/// The handlers the suite runs. `rust-vm` (io.containerd.rust-vm.v2) joins this list once
/// containerd.rs registers it in the CRI config.
const HANDLERS: &[&str] = &["runc"];

#[test]
#[ignore = "needs root and containerd's CRI plugin"]
fn cri_suite() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut outcomes = Vec::new();
    for handler in HANDLERS {
        rt.block_on(async {
            let suite = Suite::start(handler)
                .await
                .expect("start containerd with CRI");
            outcomes.extend(checks::run_all(&suite, handler).await);
            // Dropping the suite removes what the checks left and stops containerd.
        });
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
