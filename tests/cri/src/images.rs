//! The two images the suite needs, built locally (no registry): busybox (from Debian's
//! busybox-static, as shim/containerd's tests build it) and a pause image around a tiny static
//! pause binary. Each is an OCI layout tarball made with umoci, for `ctr images import`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::netns::run;

pub const BUSYBOX_IMAGE: &str = "rust-vm.test/busybox:latest";
pub const PAUSE_IMAGE: &str = "rust-vm.test/pause:latest";
const BUSYBOX: &str = "/bin/busybox";

/// The pause program: sleeps in pause(), reaps children (it is the pod's PID 1 when the pod
/// shares its PID namespace), exits on SIGTERM/SIGINT.
const PAUSE_C: &str = r#"
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = quit;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
    return 1;
}
"#;

/// Builds the busybox image archive (`sh` as command, busybox's applets linked in /bin).
pub fn busybox(dir: &Path) -> Result<PathBuf> {
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    build(dir, "busybox", &["--config.cmd", "sh"], |rootfs| {
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin)?;
        fs::copy(BUSYBOX, bin.join("busybox"))?;
        let list = run(Command::new(BUSYBOX).arg("--list"))?;
        for applet in list.lines() {
            let link = bin.join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link)?;
            }
        }
        for d in ["dev", "proc", "sys", "tmp", "etc", "root"] {
            fs::create_dir_all(rootfs.join(d))?;
        }
        Ok(())
    })
}

/// Builds the pause image archive: one static binary, `/pause`, as entrypoint.
pub fn pause(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("pause.c");
    let binary = dir.join("pause");
    fs::write(&source, PAUSE_C)?;
    run(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source))
    .context("compile the pause binary (apt-get install build-essential)")?;
    build(dir, "pause", &["--config.entrypoint", "/pause"], |rootfs| {
        fs::copy(&binary, rootfs.join("pause"))?;
        for d in ["dev", "proc", "sys", "etc"] {
            fs::create_dir_all(rootfs.join(d))?;
        }
        Ok(())
    })
}

/// An OCI layout `DIR/NAME-layout` with tag `latest`: an empty image, `populate` filling its
/// root file system, `config` passed to `umoci config`; returns the tarball `DIR/NAME.tar`.
fn build(
    dir: &Path,
    name: &str,
    config: &[&str],
    populate: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let layout = dir.join(format!("{name}-layout"));
    let bundle = dir.join(format!("{name}-unpacked"));
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    populate(&bundle.join("rootfs")).with_context(|| format!("fill the {name} image"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("umoci")
        .args(["config", "--image", &image, "--config.env", "PATH=/bin"])
        .args(config))?;
    let archive = dir.join(format!("{name}.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    fs::remove_dir_all(&bundle).ok();
    fs::remove_dir_all(&layout).ok();
    Ok(archive)
}
