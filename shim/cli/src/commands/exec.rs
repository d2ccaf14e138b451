//! `exec`: a new process in a running container, with its stdio relayed; exits with its status.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{Process, User};
use rust_vm_sandbox::protocol::Exec;

use crate::bundle::Bundle;
use crate::state::{agent_client, Status};
use crate::stdio::Relay;
use crate::Global;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Allocate a terminal for the process.
    #[arg(short, long)]
    pub tty: bool,
    /// Add or override an environment variable (NAME=VALUE), repeatable.
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Take the whole process from this OCI `process` JSON file (other process flags are ignored).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process started; its output is discarded.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(g: &Global, args: ExecArgs) -> Result<i32> {
    let dir = g.root().open(&args.id)?;
    let (status, record) = dir.status()?;
    let record = match (status, record) {
        (Status::Running, Some(r)) => r,
        (status, _) => bail!(
            "container {:?} is {}: exec needs a running container",
            args.id,
            status.as_str()
        ),
    };
    let process = build_process(&args, &record.bundle)?;
    let terminal = process.terminal().unwrap_or(false);
    let mut client = agent_client(&record.agent_address, std::time::Duration::from_secs(30))?;
    let exec_id = format!("exec-{}-{}", std::process::id(), unique());
    let started = client
        .exec(Exec {
            container_id: args.id.clone(),
            exec_id: exec_id.clone(),
            process: Box::new(process),
            console_size: if terminal {
                crate::stdio::terminal_size()
            } else {
                None
            },
            stdin: !args.detach,
        })
        .with_context(|| format!("executing in container {:?}", args.id))?;
    if let Some(path) = &args.pid_file {
        super::create::write_pid_file(path, started.pid)?;
    }
    if args.detach {
        return Ok(0);
    }
    let address = record
        .agent_address
        .parse()
        .context("agent address in the container's state")?;
    let relay = Relay::attach(
        &address,
        &args.id,
        Some(&exec_id),
        terminal,
        true,
        client.timeout(),
    )?;
    let _raw = terminal.then(crate::stdio::RawTerminal::enter).flatten();
    client.set_timeout(None);
    let exit = client
        .wait(&args.id, Some(&exec_id))
        .with_context(|| format!("waiting for the exec'd process in {:?}", args.id))?;
    relay.drain(std::time::Duration::from_secs(5));
    Ok(exit.exit_code)
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn build_process(args: &ExecArgs, bundle_dir: &std::path::Path) -> Result<Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading process file {}", path.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid OCI process", path.display()));
    }
    if args.command.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    // Start from the container's own process: same user, env, capabilities and limits.
    let mut process = Bundle::load(bundle_dir)
        .ok()
        .and_then(|b| b.spec.process().clone())
        .unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for pair in &args.env {
            let Some((name, _)) = pair.split_once('=') else {
                bail!("--env {pair:?}: expected NAME=VALUE");
            };
            env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(name));
            env.push(pair.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        process.set_user(parse_user(user)?);
    }
    Ok(process)
}

fn parse_user(text: &str) -> Result<User> {
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let mut user = User::default();
    user.set_uid(
        uid.parse()
            .with_context(|| format!("--user {text:?}: uid must be a number"))?,
    );
    if let Some(gid) = gid {
        user.set_gid(
            gid.parse()
                .with_context(|| format!("--user {text:?}: gid must be a number"))?,
        );
    }
    Ok(user)
}
