//! `cri-suite [HANDLER...]`: the whole CRI suite against the handlers named (default: `runc`
//! then `rust-vm`), as root. Exits 1 when a check failed, 2 on a bad argument.

use std::process::ExitCode;

use rust_vm_cri_tests::suite::{self, HANDLERS};

fn main() -> ExitCode {
    let asked: Vec<String> = std::env::args().skip(1).collect();
    if let Some(bad) = asked.iter().find(|a| !HANDLERS.contains(&a.as_str())) {
        eprintln!(
            "cri-suite: unknown handler {bad:?} (known: {})",
            HANDLERS.join(", ")
        );
        return ExitCode::from(2);
    }
    let handlers: Vec<&str> = if asked.is_empty() {
        HANDLERS.to_vec()
    } else {
        asked.iter().map(String::as_str).collect()
    };
    let failed = suite::failures(&suite::run(&handlers));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("cri-suite: failed checks: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
