use anyhow::{bail, Context, Result};
use clap::Args;
use rust_vm_sandbox::sandbox::process::host_pid_in_namespace;
use rust_vm_sandbox::Backend;

use crate::commands::list::Format;
use crate::state::{agent_client, Status};
use crate::Global;

#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Container id.
    pub id: String,
}

pub fn ps(g: &Global, args: PsArgs) -> Result<()> {
    let dir = g.root().open(&args.id)?;
    let (status, record) = dir.status()?;
    let record = match (status, record) {
        (Status::Created | Status::Running, Some(r)) => r,
        (status, _) => bail!(
            "container {:?} is {}: it has no processes",
            args.id,
            status.as_str()
        ),
    };
    let client = agent_client(&record.agent_address, std::time::Duration::from_secs(10))?;
    let pids = client
        .list_processes(&args.id)
        .with_context(|| format!("listing the processes of {:?}", args.id))?;
    // namespaces: host pids, like runc; vm: guest pids (there is no host process per container).
    let shown: Vec<(i32, String)> = pids
        .iter()
        .map(|&p| match record.backend {
            Backend::Namespaces => {
                let host = host_pid_in_namespace(record.sandbox_pid, p as u32)
                    .map(|h| h as i32)
                    .unwrap_or(p);
                (host, command_line(host))
            }
            Backend::Vm => (p, String::new()),
        })
        .collect();
    match args.format {
        Format::Json => {
            let list: Vec<i32> = shown.iter().map(|(p, _)| *p).collect();
            println!("{}", serde_json::to_string(&list)?);
        }
        Format::Table => {
            println!("{:<8} CMD", "PID");
            for (pid, cmd) in shown {
                println!("{pid:<8} {cmd}");
            }
        }
    }
    Ok(())
}

fn command_line(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
