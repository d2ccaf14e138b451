fn main() -> anyhow::Result<()> {
    anyhow::bail!("rust-vm-vmm: not assembled yet")
}
