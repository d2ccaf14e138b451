//! Address buses: one for x86 port I/O, one for MMIO. A vCPU exit names an address; the bus finds
//! the device whose range holds it and hands over the offset into that range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus range. `offset` is relative to the start of its range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    InvalidRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    base: u64,
    len: u64,
}

impl Range {
    fn end(&self) -> u64 {
        self.base + self.len
    }
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A set of non-overlapping address ranges, each owned by one device.
#[derive(Default, Clone)]
pub struct Bus {
    devices: Arc<Mutex<BTreeMap<u64, (Range, SharedDevice)>>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let range = Range { base, len };
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let mut devices = self.devices.lock().expect("bus lock poisoned");
        // Only the nearest range below `end` can overlap, because ranges never overlap each other.
        if let Some((_, (other, _))) = devices.range(..range.end()).next_back() {
            if other.end() > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other: other.base,
                });
            }
        }
        devices.insert(base, (range, device));
        Ok(())
    }

    fn resolve(&self, addr: u64, size: usize) -> Option<(u64, SharedDevice)> {
        let devices = self.devices.lock().expect("bus lock poisoned");
        let (_, (range, device)) = devices.range(..=addr).next_back()?;
        let offset = addr - range.base;
        let access_end = offset.checked_add(size as u64)?;
        (access_end <= range.len).then(|| (offset, device.clone()))
    }

    /// Reads from the device at `addr`. Returns false when no device claims the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .expect("device lock poisoned")
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`. Returns false when no device claims the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .expect("device lock poisoned")
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with the offset it was given.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_accesses_by_offset() {
        let bus = Bus::new();
        let probe = Arc::new(Mutex::new(Probe::default()));
        bus.insert(probe.clone(), 0x3f8, 8).unwrap();
        let mut byte = [0u8; 1];
        assert!(bus.read(0x3fd, &mut byte));
        assert_eq!(byte, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert_eq!(probe.lock().unwrap().last_write, Some((0, b"A".to_vec())));
    }

    #[test]
    fn misses_outside_and_across_ranges() {
        let bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Probe::default())), 0x1000, 0x10)
            .unwrap();
        let mut word = [0u8; 4];
        assert!(!bus.read(0xfff, &mut word[..1]));
        assert!(!bus.read(0x1010, &mut word[..1]));
        // An access that starts inside but runs past the end belongs to no device.
        assert!(!bus.read(0x100e, &mut word));
        assert!(bus.read(0x100c, &mut word));
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Probe::default())) as SharedDevice;
        bus.insert(dev(), 0x100, 0x100).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0x1ff, 1),
            Err(BusError::Overlap { other: 0x100, .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0x80, 0x81),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(
            bus.insert(dev(), 0x10, 0),
            Err(BusError::InvalidRange { base: 0x10, len: 0 })
        );
        assert!(bus.insert(dev(), u64::MAX, 2).is_err());
        bus.insert(dev(), 0x200, 0x10).unwrap();
        bus.insert(dev(), 0x80, 0x80).unwrap();
    }
}
