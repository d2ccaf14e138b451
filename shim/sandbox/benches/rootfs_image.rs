//! Rootfs preparation per container: ext4 copy vs virtio-fs share.
//! `cargo bench -p rust-vm-sandbox --bench rootfs_image` (as root: the share needs mount
//! namespaces; virtiofsd at [`DEFAULT_VIRTIOFSD`]).
//!
//! For trees of 1 MiB, 100 MiB and 1 GiB of content (half in many small files, half in a few
//! large ones, like a distro tree), it times, median of 3 runs each:
//!
//! * `ext4` — [`build_ext4_image`], the copy `RootfsMode::Block` makes (`mkfs.ext4 -d`);
//! * `add` / `remove` — [`Share::add_container`] and [`Share::remove_container`] of the same tree
//!   on a running share (`RootfsMode::VirtioFs`, no copy: a recursive bind into the share's
//!   namespace). One share per size; its virtiofsd only listens, no VMM connects.
//!
//! and prints the ratios ext4/add and ext4/(add+remove).

use std::fs;
use std::path::Path;
use std::time::Instant;

use rust_vm_sandbox::config::DEFAULT_VIRTIOFSD;
use rust_vm_sandbox::rootfs::{build_ext4_image, ImageOptions};
use rust_vm_sandbox::sandbox::share::{Layout, Share, ShareOptions};
use rust_vm_sandbox::{LogLevel, VirtiofsCache};

const MIB: usize = 1024 * 1024;
const RUNS: usize = 3;

fn fill(dir: &Path, mib: usize) -> std::io::Result<()> {
    let small = vec![0x5au8; 16 * 1024];
    let small_files = mib * MIB / 2 / small.len();
    for i in 0..small_files {
        let sub = dir.join(format!("d{}", i / 256));
        fs::create_dir_all(&sub)?;
        fs::write(sub.join(format!("f{i}")), &small)?;
    }
    // The other half in files of up to 4 MiB (one smaller one for a small tree).
    let big = vec![0xa5u8; 4 * MIB];
    let mut left = mib * MIB - small_files * small.len();
    let mut i = 0;
    while left > 0 {
        let len = left.min(big.len());
        fs::write(dir.join(format!("big{i}")), &big[..len])?;
        left -= len;
        i += 1;
    }
    Ok(())
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Milliseconds `f` takes.
fn time_ms<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let started = Instant::now();
    let out = f();
    (started.elapsed().as_secs_f64() * 1000.0, out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let virtiofsd = Path::new(DEFAULT_VIRTIOFSD);
    if !virtiofsd.is_file() {
        return Err(format!(
            "virtiofsd not found at {DEFAULT_VIRTIOFSD} (rust_vm_sandbox::config::DEFAULT_VIRTIOFSD): \
             install it there to run this bench"
        )
        .into());
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err("this bench needs root: the virtio-fs share makes a mount namespace".into());
    }
    let options = ShareOptions {
        virtiofsd: virtiofsd.to_path_buf(),
        cache: VirtiofsCache::Auto,
        thread_pool_size: 0,
        log_level: LogLevel::Warn,
        cgroup_procs: Vec::new(),
    };

    let sizes = [1usize, 100, 1024];
    println!(
        "rootfs preparation per container: ext4 copy vs virtio-fs share, median of {RUNS} runs"
    );
    println!(
        "{:>12} {:>7} {:>10} {:>13} {:>16} {:>9} {:>14}",
        "content MiB",
        "files",
        "ext4 ms",
        "share add ms",
        "share remove ms",
        "ext4/add",
        "ext4/(add+rm)"
    );
    for mib in sizes {
        let src = tempfile::tempdir()?;
        fill(src.path(), mib)?;

        let out = tempfile::tempdir()?;
        let mut ext4_times = Vec::new();
        let mut last = None;
        for run in 0..RUNS {
            let img = out.path().join(format!("img{run}"));
            let (ms, built) =
                time_ms(|| build_ext4_image(src.path(), &img, &ImageOptions::default()));
            ext4_times.push(ms);
            fs::remove_file(&img)?;
            last = Some(built?);
        }
        let built = last.ok_or("no run")?;

        let state = tempfile::tempdir()?;
        let mut share = Share::start(
            &format!("bench-{mib}"),
            Layout::new(state.path(), state.path()),
            &options,
        )?;
        let mut add_times = Vec::new();
        let mut remove_times = Vec::new();
        for _ in 0..RUNS {
            let (ms, added) = time_ms(|| share.add_container("c", Some(src.path()), &[]));
            added?;
            add_times.push(ms);
            let (ms, removed) = time_ms(|| share.remove_container("c"));
            removed?;
            remove_times.push(ms);
        }
        if let Some(status) = share.virtiofsd_exited() {
            return Err(format!(
                "virtiofsd exited during the bench ({status}); see {}",
                share.layout().log.display()
            )
            .into());
        }
        share.shutdown();

        let (ext4, add, remove) = (median(ext4_times), median(add_times), median(remove_times));
        println!(
            "{:>12.1} {:>7} {:>10.1} {:>13.3} {:>16.3} {:>9.1} {:>14.1}",
            built.content.bytes as f64 / MIB as f64,
            built.content.inodes,
            ext4,
            add,
            remove,
            ext4 / add,
            ext4 / (add + remove)
        );
    }
    Ok(())
}
