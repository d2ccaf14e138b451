//! `cri-suite [--checks NAME,NAME...] [HANDLER...]`: the CRI suite against the handlers named
//! (default: `runc` then `rust-vm`), as root; with `--checks`, only the checks named, in the
//! suite's order (a check on the pod needs `RunPodSandbox`, `CreateContainer` and
//! `StartContainer` named too). Exits 1 when a check failed, 2 on a bad argument.

use std::process::ExitCode;

use rust_vm_cri_tests::checks;
use rust_vm_cri_tests::suite::{self, HANDLERS};

fn main() -> ExitCode {
    let mut handlers: Vec<String> = Vec::new();
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--checks" {
            let Some(list) = args.next() else {
                eprintln!("cri-suite: --checks needs a comma-separated list of check names");
                return ExitCode::from(2);
            };
            only = Some(list.split(',').map(str::to_owned).collect());
        } else if HANDLERS.contains(&arg.as_str()) {
            handlers.push(arg);
        } else {
            eprintln!(
                "cri-suite: unknown handler {arg:?} (known: {})",
                HANDLERS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let known: Vec<&str> = checks::all().iter().map(|c| c.name).collect();
    if let Some(bad) = only.iter().flatten().find(|n| !known.contains(&n.as_str())) {
        eprintln!(
            "cri-suite: unknown check {bad:?} (known: {})",
            known.join(", ")
        );
        return ExitCode::from(2);
    }
    let handlers: Vec<&str> = if handlers.is_empty() {
        HANDLERS.to_vec()
    } else {
        handlers.iter().map(String::as_str).collect()
    };
    let failed = suite::failures(&suite::run_some(&handlers, only.as_deref()));
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("cri-suite: failed checks: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
