//! A minimal i8042 keyboard controller: enough for Linux to probe it, and the CPU reset command
//! (0xfe to the command port) through which a guest reboot ends the VMM.

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Offsets from port 0x60.
const DATA_OFFSET: u64 = 0;
const COMMAND_OFFSET: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
/// The system flag: set once the self test passed, as after a warm boot.
const STATUS_SYSTEM: u8 = 0x04;
/// Last write was a command (not data).
const STATUS_COMMAND: u8 = 0x08;

const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
/// Bytes the output queue holds at most.
const OUTPUT_CAPACITY: usize = 16;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_PULSE_RESET: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// Output port: A20 enabled, reset line not asserted.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;
/// Config byte: keyboard interrupt enabled, system flag, translation on.
const CONFIG_DEFAULT: u8 = 0x45;
const CONFIG_KBD_DISABLED: u8 = 0x10;
const CONFIG_AUX_DISABLED: u8 = 0x20;

pub struct I8042Device {
    reset_evt: EventFd,
    status: u8,
    config: u8,
    output_port: u8,
    /// Command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    output: VecDeque<u8>,
}

impl I8042Device {
    /// `reset_evt` is signalled when the guest pulses the CPU reset line.
    pub fn new(reset_evt: EventFd) -> Self {
        Self {
            reset_evt,
            status: STATUS_SYSTEM,
            config: CONFIG_DEFAULT,
            output_port: OUTPUT_PORT_DEFAULT,
            pending: None,
            output: VecDeque::new(),
        }
    }

    /// Queues a byte for the guest to read. A real controller holds one; a few are kept for
    /// back-to-back commands, and bytes past that are dropped, so a guest repeating a command
    /// without reading cannot grow the queue.
    fn put(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_CAPACITY {
            self.output.push_back(byte);
        }
    }

    fn status(&self) -> u8 {
        let full = if self.output.is_empty() {
            0
        } else {
            STATUS_OUTPUT_FULL
        };
        self.status | full
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_COMMAND;
        match cmd {
            CMD_READ_CONFIG => self.put(self.config),
            CMD_WRITE_CONFIG
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_OUTPUT
            | CMD_WRITE_AUX_OUTPUT => self.pending = Some(cmd),
            CMD_DISABLE_AUX => self.config |= CONFIG_AUX_DISABLED,
            CMD_ENABLE_AUX => self.config &= !CONFIG_AUX_DISABLED,
            CMD_TEST_AUX | CMD_TEST_KBD => self.put(PORT_TEST_OK),
            CMD_SELF_TEST => self.put(SELF_TEST_OK),
            CMD_DISABLE_KBD => self.config |= CONFIG_KBD_DISABLED,
            CMD_ENABLE_KBD => self.config &= !CONFIG_KBD_DISABLED,
            CMD_READ_OUTPUT_PORT => self.put(self.output_port),
            CMD_PULSE_RESET => self.reset(),
            other => log::debug!("i8042: ignoring command {other:#x}"),
        }
    }

    fn data(&mut self, value: u8) {
        self.status &= !STATUS_COMMAND;
        match self.pending.take() {
            Some(CMD_WRITE_CONFIG) => self.config = value,
            Some(CMD_WRITE_OUTPUT_PORT) => self.output_port = value,
            // "Write output buffer": the byte comes back as if the device had sent it (Linux
            // probes the AUX port this way).
            Some(_) => self.put(value),
            // No keyboard is attached: bytes for the keyboard itself go nowhere.
            None => {}
        }
    }

    fn reset(&mut self) {
        log::info!("guest requested a reset through the i8042");
        if let Err(e) = self.reset_evt.write(1) {
            log::error!("i8042: cannot signal the reset: {e}");
        }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.output.pop_front().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            DATA_OFFSET => self.data(value),
            COMMAND_OFFSET => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (I8042Device, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042Device::new(evt.try_clone().unwrap()), evt)
    }

    fn read(dev: &mut I8042Device, offset: u64) -> u8 {
        let mut byte = [0];
        dev.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn reset_command_signals_the_vmm() {
        let (mut dev, evt) = device();
        assert!(evt.read().is_err(), "nothing signalled yet");
        dev.write(COMMAND_OFFSET, &[CMD_PULSE_RESET]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn self_test_and_config_round_trip() {
        let (mut dev, evt) = device();
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut dev, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);

        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CONFIG]);
        dev.write(DATA_OFFSET, &[0x31]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CONFIG]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x31);
        assert!(evt.read().is_err(), "no reset from ordinary commands");
    }

    #[test]
    fn repeated_commands_cannot_grow_the_output_queue() {
        let (mut dev, _evt) = device();
        for _ in 0..10_000 {
            dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        assert_eq!(dev.output.len(), OUTPUT_CAPACITY);
        assert_eq!(read(&mut dev, DATA_OFFSET), SELF_TEST_OK);
    }

    #[test]
    fn output_buffer_writes_echo_back() {
        let (mut dev, _evt) = device();
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_AUX_OUTPUT]);
        dev.write(DATA_OFFSET, &[0x5a]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x5a);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0x01]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_OUTPUT_PORT]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x01);
    }

    #[test]
    fn input_buffer_is_always_ready() {
        // Linux waits for "input buffer full" (bit 1) to clear before each command.
        let (mut dev, _evt) = device();
        dev.write(COMMAND_OFFSET, &[CMD_DISABLE_KBD]);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & 0x02, 0);
    }
}
