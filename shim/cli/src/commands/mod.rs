//! One file per verb.

pub mod check;
pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod list;
pub mod monitor;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;

use clap::Args;

use crate::{Cli, Command};

#[derive(Debug, Args)]
pub struct IdArg {
    /// Container id.
    pub id: String,
}

/// Runs the command; the result is the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    // A broken configuration is reported by every verb, not only by those that start sandboxes.
    if !matches!(cli.command, Command::Spec(_)) {
        g.runtime_config()?;
    }
    match cli.command {
        Command::Run(args) => run::run(g, args),
        Command::Create(args) => create::create(g, args).map(|()| 0),
        Command::Start(args) => start::start(g, &args.id).map(|()| 0),
        Command::State(args) => state::state(g, &args.id).map(|()| 0),
        Command::Kill(args) => kill::kill(g, args).map(|()| 0),
        Command::Delete(args) => delete::delete(g, args).map(|()| 0),
        Command::List(args) => list::list(g, args).map(|()| 0),
        Command::Ps(args) => ps::ps(g, args).map(|()| 0),
        Command::Exec(args) => exec::exec(g, args),
        Command::Spec(args) => spec::spec(args).map(|()| 0),
        Command::Check => check::check(g),
        Command::Monitor(args) => monitor::monitor(g, args),
    }
}
