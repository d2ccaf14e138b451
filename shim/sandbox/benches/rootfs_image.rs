//! Cost of turning a bundle rootfs directory into the ext4 image the `vm` back-end attaches:
//! `cargo bench -p rust-vm-sandbox --bench rootfs_image`. Prints wall time per MiB of content for
//! trees of a few sizes (half in many small files, half in a few large ones, like a distro tree),
//! plus the image size it produced.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use rust_vm_sandbox::rootfs::{build_ext4_image, ImageOptions};

const MIB: usize = 1024 * 1024;

fn fill(dir: &Path, mib: usize) -> std::io::Result<()> {
    let small = vec![0x5au8; 16 * 1024];
    let small_files = mib * MIB / 2 / small.len();
    for i in 0..small_files {
        let sub = dir.join(format!("d{}", i / 256));
        fs::create_dir_all(&sub)?;
        fs::write(sub.join(format!("f{i}")), &small)?;
    }
    let big = vec![0xa5u8; 4 * MIB];
    for i in 0..(mib / 2).div_ceil(4) {
        fs::write(dir.join(format!("big{i}")), &big)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes = [16usize, 64, 256];
    let runs = 3;
    println!("rootfs image build (mkfs.ext4 -d), median of {runs} runs");
    println!(
        "{:>10} {:>10} {:>11} {:>10} {:>11} {:>7}",
        "content", "image", "allocated", "total ms", "ms per MiB", "files"
    );
    for mib in sizes {
        let src = tempfile::tempdir()?;
        fill(src.path(), mib)?;
        let out = tempfile::tempdir()?;
        let mut times = Vec::new();
        let mut last = None;
        let mut allocated = 0;
        for run in 0..runs {
            let img = out.path().join(format!("img{run}"));
            let started = Instant::now();
            let built = build_ext4_image(src.path(), &img, &ImageOptions::default())?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            allocated = fs::metadata(&img)?.blocks() * 512;
            fs::remove_file(&img)?;
            last = Some(built);
        }
        times.sort_by(f64::total_cmp);
        let median = times[runs / 2];
        let built = last.ok_or("no run")?;
        let content_mib = built.content.bytes as f64 / MIB as f64;
        println!(
            "{:>6.1} MiB {:>6} MiB {:>7.1} MiB {:>10.1} {:>11.2} {:>7}",
            content_mib,
            built.size_bytes / MIB as u64,
            allocated as f64 / MIB as f64,
            median,
            median / content_mib,
            built.content.inodes
        );
    }
    Ok(())
}
