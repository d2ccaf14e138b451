//! Pod networking: TCP from the node into a pod and back under rust-vm (`vm` back-end) against
//! the same pod under runc, side by side on one private containerd. Each pod is wired by the
//! bridge CNI plugin in namespaces of the benchmark's own (tests/common/net.rs) with MTU 1450,
//! and runs busybox `nc -ll -e /bin/cat` (an echo server).
//!
//! `cargo bench -p containerd-shim-rust-vm-v2 --bench pod_net [-- MIB]` (root; boots one
//! guest). Prints, per runtime: echo throughput (MiB/s each way, MIB MiB through one connection,
//! default 1: where guest ring 0 is emulated the VM echoes tens of KiB/s) and request/response
//! latency (median and p90 of 200 round trips of 64 bytes on one connection), then rust-vm / runc
//! ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::net::{cni, connect_echo, echo_through, run_pod, Netns, ECHO_PORT};
use common::{Containerd, GUEST_STEP, RUNC, RUNTIME};

const DEFAULT_MIB: usize = 1;
const ROUND_TRIPS: usize = 200;

struct Figures {
    mib_per_s: f64,
    median: Duration,
    p90: Duration,
}

fn main() {
    let mib = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MIB)
        .max(1);
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("pod_net: needs root (containerd, network namespaces)");
        std::process::exit(1);
    }
    let ctd = Containerd::start("netbench");
    let node = Netns::new("bench-node");
    node.ip(&["link", "set", "lo", "up"]);
    let config = ctd.vm_backend_config();
    let mut results = Vec::new();
    for (name, runtime) in [("runc", RUNC), ("rust-vm", RUNTIME)] {
        let figures = measure(&ctd, &node, runtime, &config, name, mib);
        println!(
            "{name:>8}: echo {:8.2} MiB/s each way ({mib} MiB), round trip median {:?}, p90 {:?}",
            figures.mib_per_s, figures.median, figures.p90
        );
        results.push(figures);
    }
    let (runc, vm) = (&results[0], &results[1]);
    // Where guest ring 0 is emulated the ratio is tiny: as 1/N, it still reads.
    println!(
        "rust-vm / runc: throughput 1/{:.0}, round-trip median {:.0}x",
        runc.mib_per_s / vm.mib_per_s,
        vm.median.as_secs_f64() / runc.median.as_secs_f64()
    );
    println!("CPU: {}", rust_vm_test_support::cpu_model());
}

fn measure(
    ctd: &Containerd,
    node: &Netns,
    runtime: &str,
    config: &Path,
    name: &str,
    mib: usize,
) -> Figures {
    let pod = Netns::new(&format!("bench-{name}"));
    let ipam: PathBuf = ctd.dir.join("cni-ipam");
    let address = cni(node, "ADD", &pod, &ipam).expect("pod address");
    let id = format!("net-{name}");
    let echo = format!("nc -ll -p {ECHO_PORT} -e /bin/cat");
    let config = (runtime == RUNTIME).then_some(config);
    run_pod(ctd, runtime, config, &id, &pod, &["sh", "-c", &echo]);

    // A first exchange waits for the listener and warms both paths up.
    echo_through(node, address.clone(), vec![1; 4096]);
    let data: Vec<u8> = (0..mib * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (back, took) = echo_through(node, address.clone(), data.clone());
    assert!(back == data, "{name}: the echo came back different");
    let mib_per_s = mib as f64 / took.as_secs_f64();

    let mut rtts = node.run(move || {
        let mut stream = connect_echo(&address);
        stream.set_nodelay(true).expect("nodelay");
        let mut rtts = Vec::with_capacity(ROUND_TRIPS);
        let mut buf = [0u8; 64];
        for _ in 0..ROUND_TRIPS {
            let started = Instant::now();
            stream.write_all(&[7u8; 64]).expect("send");
            stream.read_exact(&mut buf).expect("receive");
            rtts.push(started.elapsed());
        }
        rtts
    });
    rtts.sort();

    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    ctd.wait_for_status(&id, Some("STOPPED"), GUEST_STEP);
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    cni(node, "DEL", &pod, &ipam);
    Figures {
        mib_per_s,
        median: rtts[rtts.len() / 2],
        p90: rtts[rtts.len() * 9 / 10],
    }
}
