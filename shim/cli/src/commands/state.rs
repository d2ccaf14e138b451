use anyhow::Result;

use crate::Global;

pub fn state(g: &Global, id: &str) -> Result<()> {
    let dir = g.root().open(id)?;
    let state = dir.oci_state()?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
