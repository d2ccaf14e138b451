//! The smaps arithmetic of the vmm_bench benchmark (a bench target runs no tests).

#[path = "../benches/common/smaps.rs"]
mod smaps;

use smaps::rss_kib;

#[test]
fn rss_is_split_by_mapping_size() {
    let smaps = "\
55d0-55e0 r-xp 00000000 08:01 123 /usr/bin/rust-vm-vmm
Size:                 64 kB
Rss:                  40 kB
7f00000000-7f10000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:                1024 kB
7ffd000-7ffe000 rw-p 00000000 00:00 0 [stack]
Rss:                   8 kB
";
    let guest = 0x10000000;
    assert_eq!(rss_kib(smaps, |size| size != guest), 48);
    assert_eq!(rss_kib(smaps, |size| size == guest), 1024);
}
