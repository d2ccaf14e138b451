//! COM1: a 16550A UART (vm-superio) whose transmitted bytes go to stdout or a file and whose
//! interrupt line is an irqfd.

use std::io::{self, Write};

use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Raises the UART's interrupt by signalling an EventFd registered as a KVM irqfd.
pub struct IrqFdTrigger(EventFd);

impl IrqFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for IrqFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's serial output goes.
pub type SerialOutput = Box<dyn Write + Send>;

/// The most console bytes one VM writes to a file: the guest writes its console as it likes, and
/// the host's disk is not its to fill.
pub const MAX_CONSOLE_FILE_BYTES: u64 = 16 << 20;

/// What ends a console file that reached its limit.
const TRUNCATED_NOTE: &[u8] =
    b"\n[rust-vm-vmm: console output beyond this point dropped: the limit is reached]\n";

/// Passes bytes on until `limit`, then writes one note and drops the rest, reporting it written
/// so that the UART never stalls on a full console.
pub struct Capped<W> {
    inner: W,
    left: u64,
    noted: bool,
}

impl<W> Capped<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            noted: false,
        }
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.noted {
                self.noted = true;
                log::warn!("serial: console limit reached, dropping further output");
                self.inner.write_all(TRUNCATED_NOTE)?;
            }
            return Ok(buf.len());
        }
        let n = usize::try_from(self.left).map_or(buf.len(), |left| buf.len().min(left));
        let written = self.inner.write(&buf[..n])?;
        self.left -= written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct SerialDevice {
    uart: Serial<IrqFdTrigger, NoEvents, SerialOutput>,
    /// Logged once: a closed stdout must not flood the log with one line per guest byte.
    reported_output_error: bool,
}

impl SerialDevice {
    pub fn new(irq: EventFd, output: SerialOutput) -> Self {
        Self {
            uart: Serial::new(IrqFdTrigger::new(irq), output),
            reported_output_error: false,
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers; wider accesses read as all ones, like a floating bus.
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(offset)) => data[0] = self.uart.read(offset),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (1, Ok(offset)) = (data.len(), u8::try_from(offset)) else {
            return;
        };
        match self.uart.write(offset, data[0]) {
            Ok(()) => {}
            Err(SerialError::IOError(e)) if !self.reported_output_error => {
                self.reported_output_error = true;
                log::warn!("serial output lost: {e}");
            }
            Err(SerialError::IOError(_)) => {}
            Err(e) => log::error!("serial: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_bytes_and_raises_the_irq() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SharedBuf::default();
        let mut serial = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        serial.write(1, &[0x02]); // IER: transmitter-empty interrupt
        for byte in b"hi\n" {
            serial.write(0, &[*byte]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert!(irq.read().unwrap() >= 1);
        let mut lsr = [0u8];
        serial.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
    }

    #[test]
    fn a_capped_console_keeps_its_limit_and_says_so_once() {
        let out = SharedBuf::default();
        let mut capped = Capped::new(out.clone(), 5);
        capped.write_all(b"hello world").unwrap();
        capped.write_all(b"more").unwrap();
        capped.write_all(b"and more").unwrap();
        let mut want = b"hello".to_vec();
        want.extend_from_slice(TRUNCATED_NOTE);
        assert_eq!(&*out.0.lock().unwrap(), &want);
        // Through the UART: a guest that writes past the limit is never refused.
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SharedBuf::default();
        let mut serial = SerialDevice::new(irq, Box::new(Capped::new(out.clone(), 2)));
        for byte in b"abcdef" {
            serial.write(0, &[*byte]);
        }
        assert!(out.0.lock().unwrap().starts_with(b"ab\n[rust-vm-vmm"));
        assert!(!serial.reported_output_error);
    }

    #[test]
    fn ignores_wide_accesses() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SharedBuf::default();
        let mut serial = SerialDevice::new(irq, Box::new(out.clone()));
        serial.write(0, b"ab");
        assert!(out.0.lock().unwrap().is_empty());
        let mut word = [0u8; 2];
        serial.read(0, &mut word);
        assert_eq!(word, [0xff, 0xff]);
    }
}
