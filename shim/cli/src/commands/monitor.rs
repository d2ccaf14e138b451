//! `__monitor` (internal): the owner of a detached container's sandbox. Started by `create` with
//! the ready pipe on fd 3 and the container's stdio on fds 0-2; see create.rs.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rust_vm_sandbox::RuntimeConfig;

use crate::bundle::Bundle;
use crate::commands::create::READY_FD;
use crate::launch;
use crate::Global;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    pub id: String,
}

pub fn monitor(g: &Global, args: MonitorArgs) -> Result<i32> {
    // fd 3 must be the pipe `create` gave us; refuse to run by hand.
    if nix::fcntl::fcntl(
        // SAFETY: only used to query flags of a descriptor number.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(READY_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        bail!("__monitor is internal to `rust-vm create`");
    }
    // SAFETY: fd 3 is open (checked above) and owned by nobody else in this process.
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    // Inherited without close-on-exec: set it, or the sandbox's processes would keep the pipe
    // open and `create` would never see its end.
    nix::fcntl::fcntl(
        &ready,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("setting close-on-exec on the ready pipe")?;
    let dir = g.root().open(&args.id)?;
    dir.write_owner()?;
    let created = (|| {
        let text = std::fs::read(dir.runtime_path())
            .with_context(|| format!("reading {}", dir.runtime_path().display()))?;
        let runtime: RuntimeConfig = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {}", dir.runtime_path().display()))?;
        let bundle = Bundle::load(&args.bundle)?;
        launch::create(&runtime, &dir, &bundle, g.log.clone())
    })();
    let owned = match created {
        Ok(owned) => owned,
        Err(e) => {
            let _ = writeln!(ready, "error: {e:#}");
            return Err(e);
        }
    };
    writeln!(ready, "ok {}", owned.record.pid).context("reporting to `create`")?;
    drop(ready);
    let exit = launch::wait_and_finish(owned, &dir)?;
    Ok(exit.exit_code)
}
