//! Runs every target over its seeds and over its committed corpus (fuzz/corpus/<target>/),
//! so the harnesses keep compiling and keep accepting their inputs without AFL.
//! `cargo test -p rust-vm-fuzz-harness -- --ignored write_seed_corpus` rewrites the seed files.

use std::path::PathBuf;

use rust_vm_fuzz_harness::{seeds, Target, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target)
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no target {name}"))
}

fn replay(name: &str) {
    let run = target(name);
    let (_, seeds) = seeds::all().into_iter().find(|(n, _)| *n == name).unwrap();
    for seed in &seeds {
        run(seed);
    }
    let mut files = 0;
    for entry in std::fs::read_dir(corpus_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        files += 1;
    }
    assert!(files >= seeds.len(), "{name}: corpus has {files} files");
    // Empty and truncated inputs are programs too.
    run(&[]);
    for seed in &seeds {
        run(&seed[..seed.len() / 2]);
    }
}

#[test]
fn blk() {
    replay("blk");
}

#[test]
fn vsock() {
    replay("vsock");
}

#[test]
fn mmio() {
    replay("mmio");
}

#[test]
fn net() {
    replay("net");
}

#[test]
fn agent_frame() {
    replay("agent_frame");
}

#[test]
fn agent_dispatch() {
    replay("agent_dispatch");
}

#[test]
fn oci_spec() {
    replay("oci_spec");
}

#[test]
fn every_target_has_a_replay_test_and_seeds() {
    let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
    let seeded: Vec<_> = seeds::all().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, seeded);
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*"]
fn write_seed_corpus() {
    for (name, seeds) in seeds::all() {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
