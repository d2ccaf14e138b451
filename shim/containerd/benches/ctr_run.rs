//! `ctr run --rm` of `/bin/true`: rust-vm's shim (namespaces back-end) against
//! `io.containerd.runc.v2` (Debian's runc), side by side on one private containerd.
//!
//! `cargo bench -p containerd-shim-rust-vm-v2 --bench ctr_run [-- ITERATIONS]` (root).
//! Runs alternate between the runtimes so drift on the host affects both alike.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{median, Containerd, IMAGE, NO_CPU_SHARES, RUNC, RUNTIME};

const DEFAULT_ITERATIONS: usize = 20;

fn run_once(ctd: &Containerd, runtime: &str, id: &str) -> Result<Duration, String> {
    // Both runtimes get the same spec; see NO_CPU_SHARES for why it has no cpu.shares.
    let mut argv = vec!["run", "--rm", "--runtime", runtime];
    argv.extend_from_slice(&NO_CPU_SHARES);
    argv.extend_from_slice(&[IMAGE, id, "/bin/true"]);
    let started = Instant::now();
    let out = ctd.ctr(&argv);
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "ctr run --runtime {runtime} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            common::tail(&ctd.log(), 20)
        ));
    }
    Ok(elapsed)
}

fn main() {
    // `cargo bench` passes `--bench`; the first number is the iteration count.
    let iterations = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
        .max(1);
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("ctr_run: needs root (containerd, mounts, namespaces)");
        std::process::exit(1);
    }
    let ctd = Containerd::start("bench");
    let samples = match measure(&ctd, iterations) {
        Ok(samples) => samples,
        Err(err) => {
            eprintln!("{err}");
            // Stops containerd and its shims before exiting (exit skips destructors).
            drop(ctd);
            std::process::exit(1);
        }
    };
    report(samples, iterations);
}

const RUNTIMES: [(&str, &str); 2] = [("runc", RUNC), ("rust-vm", RUNTIME)];

fn measure(ctd: &Containerd, iterations: usize) -> Result<Vec<Vec<Duration>>, String> {
    // Warm-up: page cache, snapshot, binaries.
    for (name, runtime) in RUNTIMES {
        run_once(ctd, runtime, &format!("warm-{name}"))?;
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for i in 0..iterations {
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let (name, runtime) = RUNTIMES[k];
            samples[k].push(run_once(ctd, runtime, &format!("b-{name}-{i}"))?);
        }
    }
    Ok(samples)
}

fn report(mut samples: Vec<Vec<Duration>>, iterations: usize) {
    println!("ctr run --rm --cpu-shares 0 {IMAGE} /bin/true, {iterations} runs each (alternating)");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "runtime", "median", "min", "max"
    );
    let mut medians = Vec::new();
    for (k, (name, runtime)) in RUNTIMES.iter().enumerate() {
        let s = &mut samples[k];
        let m = median(s);
        medians.push(m);
        println!(
            "{:<34} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
            format!("{name} ({runtime})"),
            m.as_secs_f64() * 1e3,
            s[0].as_secs_f64() * 1e3,
            s[s.len() - 1].as_secs_f64() * 1e3
        );
    }
    println!(
        "ratio rust-vm/runc (medians): {:.2}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}
