use anyhow::{bail, Context, Result};
use clap::Args;

use crate::state::{agent_client, Status};
use crate::Global;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container, not only its init.
    #[arg(short, long)]
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name (TERM, SIGKILL, ...) or number.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

pub fn kill(g: &Global, args: KillArgs) -> Result<()> {
    let signal = crate::signal::parse(&args.signal)?;
    let dir = g.root().open(&args.id)?;
    let (status, record) = dir.status()?;
    let record = match (status, record) {
        (Status::Created | Status::Running, Some(record)) => record,
        (status, _) => bail!(
            "container {:?} is {}: only a created or running container can be signalled",
            args.id,
            status.as_str()
        ),
    };
    let client = agent_client(&record.agent_address, std::time::Duration::from_secs(10))?;
    client
        .signal(&args.id, None, signal, args.all)
        .with_context(|| format!("sending signal {signal} to container {:?}", args.id))?;
    Ok(())
}
