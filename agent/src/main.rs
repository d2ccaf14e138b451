//! rust-vm-agent: PID 1 of the guest (or a host process for tests), serving the agent protocol.

mod container;
mod init;
mod listener;
mod logger;
mod reaper;
mod server;

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rust-vm-agent: not assembled yet")
}
