use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::Global;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print ids only.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn list(g: &Global, args: ListArgs) -> Result<()> {
    let root = g.root();
    let ids = root.ids()?;
    if args.quiet {
        for id in ids {
            println!("{id}");
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for id in ids {
        let dir = root.container(&id);
        let created = dir
            .record()
            .ok()
            .flatten()
            .map(|r| r.created)
            .unwrap_or_default();
        match dir.oci_state() {
            Ok(state) => rows.push((state, created)),
            Err(e) => log::warn!("container {id}: {e:#}"),
        }
    }
    match args.format {
        Format::Json => {
            let json: Vec<_> = rows
                .iter()
                .map(|(s, created)| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["created"] = created.clone().into();
                    v
                })
                .collect();
            println!("{}", serde_json::to_string(&json)?);
        }
        Format::Table => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for (s, created) in rows {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {created}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display()
                );
            }
        }
    }
    Ok(())
}
