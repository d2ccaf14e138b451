mod container;

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rust-vm-agent: not assembled yet")
}
