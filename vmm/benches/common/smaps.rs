//! Reading the VMM's smaps (vmm_bench; tested by vmm/tests/smaps.rs).

/// Sum of `Rss:` over the mappings in smaps for which `keep(size)` holds, in KiB.
pub fn rss_kib(smaps: &str, keep: impl Fn(u64) -> bool) -> u64 {
    let mut total = 0;
    let mut counting = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                counting = keep(end - start);
                continue;
            }
        }
        if counting {
            if let Some(kib) = line.strip_prefix("Rss:") {
                total += kib
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    total
}
