//! Intel MultiProcessor Specification 1.4 tables, so the guest finds every vCPU, the IOAPIC and
//! how ISA interrupts are wired without ACPI.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{EBDA_START, HIMEM_START, IOAPIC_ADDR, LAPIC_ADDR, MAX_GSI, MAX_VCPUS};
use crate::GuestMemory;

const MPF_SIGNATURE: &[u8; 4] = b"_MP_";
const MPC_SIGNATURE: &[u8; 4] = b"PCMP";
const MP_SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const IOAPIC_ENABLED: u8 = 1;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Polarity and trigger "conforms to the bus".
const INT_FLAGS_DEFAULT: u16 = 0;
const ISA_BUS_ID: u8 = 0;
const ALL_LOCAL_APICS: u8 = 0xff;

const FLOATING_POINTER_LEN: usize = 16;
const CONFIG_HEADER_LEN: usize = 44;
/// CPUID signature and feature words reported per processor (family 6, FPU + APIC present).
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("the MP table supports 1 to {MAX_VCPUS} vCPUs, not {0}")]
    VcpuCount(u8),
    #[error("the MP table does not fit between the EBDA and 1 MiB")]
    TooLarge,
    #[error("cannot write the MP table")]
    GuestMemory(#[from] GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// The configuration table's entries (everything after its 44-byte header).
fn config_entries(num_cpus: u8) -> (Vec<u8>, u16) {
    let mut entries = Vec::new();
    let mut count = 0u16;
    for cpu in 0..num_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;

    let ioapic_id = num_cpus;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, APIC_VERSION, IOAPIC_ENABLED]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;

    // ISA IRQ n is IOAPIC pin n, for every pin (the virtio-mmio devices use 5..=23).
    for irq in 0..=MAX_GSI as u8 {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT]);
        entries.extend_from_slice(&INT_FLAGS_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic_id, irq]);
        count += 1;
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind]);
        entries.extend_from_slice(&INT_FLAGS_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, 0, ALL_LOCAL_APICS, lint]);
        count += 1;
    }
    (entries, count)
}

/// The floating pointer structure followed directly by the configuration table, as written at
/// `base`.
pub fn build_mptable(base: u64, num_cpus: u8) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || num_cpus > MAX_VCPUS {
        return Err(MptableError::VcpuCount(num_cpus));
    }
    let (entries, entry_count) = config_entries(num_cpus);
    let config_len = CONFIG_HEADER_LEN + entries.len();
    let config_addr = base + FLOATING_POINTER_LEN as u64;

    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(MPF_SIGNATURE);
    fp.extend_from_slice(&(config_addr as u32).to_le_bytes());
    fp.extend_from_slice(&[1, MP_SPEC_REVISION, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    fp[10] = checksum(&fp);

    let mut config = Vec::with_capacity(config_len);
    config.extend_from_slice(MPC_SIGNATURE);
    config.extend_from_slice(&(config_len as u16).to_le_bytes());
    config.extend_from_slice(&[MP_SPEC_REVISION, 0]);
    config.extend_from_slice(b"RUST-VM ");
    config.extend_from_slice(b"MICROVM     ");
    config.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    config.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    config.extend_from_slice(&entry_count.to_le_bytes());
    config.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    config.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum, reserved
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    fp.extend_from_slice(&config);
    Ok(fp)
}

/// Writes the MP table into the EBDA, where Linux scans for it.
pub fn write_mptable(mem: &GuestMemory, num_cpus: u8) -> Result<(), MptableError> {
    let table = build_mptable(EBDA_START, num_cpus)?;
    if EBDA_START + table.len() as u64 > HIMEM_START {
        return Err(MptableError::TooLarge);
    }
    mem.write_slice(&table, GuestAddress(EBDA_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    #[test]
    fn checksums_and_pointers_are_valid() {
        let table = build_mptable(EBDA_START, 4).unwrap();
        let (fp, config) = table.split_at(16);
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(sum(fp), 0);
        let config_ptr = u32::from_le_bytes(fp[4..8].try_into().unwrap());
        assert_eq!(u64::from(config_ptr), EBDA_START + 16);
        assert_eq!(&config[..4], b"PCMP");
        assert_eq!(usize::from(u16_at(config, 4)), config.len());
        assert_eq!(sum(config), 0);
    }

    #[test]
    fn lists_every_cpu_once_with_one_bootstrap() {
        for cpus in [1u8, 2, 4, MAX_VCPUS] {
            let table = build_mptable(EBDA_START, cpus).unwrap();
            let config = &table[16..];
            let mut at = CONFIG_HEADER_LEN;
            let (mut found, mut bsps, mut ioapic_id, mut lints) = (Vec::new(), 0, None, 0);
            for _ in 0..u16_at(config, 34) {
                match config[at] {
                    ENTRY_PROCESSOR => {
                        found.push(config[at + 1]);
                        bsps += usize::from(config[at + 3] & CPU_BOOTSTRAP != 0);
                        at += 20;
                    }
                    ENTRY_IOAPIC => {
                        ioapic_id = Some(config[at + 1]);
                        at += 8;
                    }
                    ENTRY_LOCAL_INTERRUPT => {
                        lints += 1;
                        at += 8;
                    }
                    _ => at += 8,
                }
            }
            assert_eq!(at, config.len());
            assert_eq!(found, (0..cpus).collect::<Vec<_>>());
            assert_eq!(bsps, 1);
            assert_eq!(ioapic_id, Some(cpus));
            assert_eq!(lints, 2);
        }
    }

    #[test]
    fn refuses_bad_cpu_counts() {
        assert!(matches!(
            build_mptable(EBDA_START, 0),
            Err(MptableError::VcpuCount(0))
        ));
        assert!(build_mptable(EBDA_START, 255).is_err());
    }

    #[test]
    fn largest_table_fits_below_1_mib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_mptable(&mem, MAX_VCPUS).unwrap();
        let sig: [u8; 4] = mem.read_obj(GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
