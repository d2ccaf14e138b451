//! rust-vm's fuzz targets, one `run_<target>` function each, fed raw bytes as a hostile guest
//! or peer would send them. The AFL binaries (fuzz/afl, its own workspace) call these in
//! persistent mode; `tests/replay.rs` runs the seed corpora through them in the normal suite.
//!
//! Every target keeps its expensive state (guest memory, devices, the event loop, host
//! sockets) per thread and resets it at the start of each run, so a run does no file or
//! network setup of its own.

mod agent;
mod blk;
mod driver;
mod input;
mod mmio;
mod net;
mod oci;
pub mod seeds;
mod vsock;

pub use agent::{run_agent_dispatch, run_agent_frame};
pub use blk::run_blk;
pub use mmio::run_mmio;
pub use net::run_net;
pub use oci::run_oci_spec;
pub use vsock::run_vsock;

/// A fuzz target: one run over one input.
pub type Target = fn(&[u8]);

/// Every target by name, as the AFL binaries and the replay tests know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("blk", run_blk),
    ("vsock", run_vsock),
    ("mmio", run_mmio),
    ("net", run_net),
    ("agent_frame", run_agent_frame),
    ("agent_dispatch", run_agent_dispatch),
    ("oci_spec", run_oci_spec),
];
