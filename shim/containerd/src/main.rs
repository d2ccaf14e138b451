//! `containerd-shim-rust-vm-v2`: the containerd runtime v2 shim of rust-vm
//! (runtime type `io.containerd.rust-vm.v2`).
//!
//! containerd runs this binary three ways (see docs/containerd.md):
//! * `start`: find or launch the shim daemon of the container's pod and print its address;
//! * no action (`-socket ADDR`): the daemon, serving the task API over ttrpc;
//! * `delete`: clean up after a daemon that is gone (mounts, sockets, sandbox state).

mod bootstrap;
mod config;
mod error;
mod events;
mod mounts;
mod pod;
mod process;
mod sandbox;
mod service;
mod stdio;

fn main() {
    if let Err(err) = bootstrap::run() {
        // containerd shows the shim's stderr in its error for `start` and `delete`.
        eprintln!("containerd-shim-rust-vm-v2: {err:#}");
        std::process::exit(1);
    }
}
