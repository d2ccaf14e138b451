use anyhow::{bail, Context, Result};

use crate::bundle::Bundle;
use crate::state::{agent_client, Status};
use crate::Global;
use rust_vm_sandbox::hooks::{self, Stage};

pub fn start(g: &Global, id: &str) -> Result<()> {
    let dir = g.root().open(id)?;
    let (status, record) = dir.status()?;
    let record = match (status, record) {
        (Status::Created, Some(record)) => record,
        (status, _) => bail!(
            "container {id:?} is {}: only a created container can be started",
            status.as_str()
        ),
    };
    let client = agent_client(&record.agent_address, std::time::Duration::from_secs(30))?;
    client
        .start(id)
        .with_context(|| format!("starting container {id:?}"))?;
    dir.mark_started()?;
    // A poststart hook failure is a warning (the process already runs), as the spec says.
    if let Ok(bundle) = Bundle::load(&record.bundle) {
        if let Err(e) = dir
            .oci_state()
            .and_then(|s| Ok(hooks::run(&bundle.spec, Stage::Poststart, &s)?))
        {
            log::warn!("container {id}: {e:#}");
        }
    }
    Ok(())
}
