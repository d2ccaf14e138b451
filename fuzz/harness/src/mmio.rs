//! The virtio-mmio register file: reads and writes of any width at any offset of the window,
//! config space included, in front of a real virtio-blk device whose event loop runs after
//! each write, so queues the registers set up are served too.

use std::cell::RefCell;
use std::fs::File;
use std::sync::{Arc, Mutex};

use vmm::devices::bus::BusDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::{MmioTransport, VirtioDevice, MMIO_SLOT_SIZE};

use crate::blk::{block_over, memfd, SECTORS};
use crate::driver::{Driver, Looped};
use crate::input::Input;

struct State {
    driver: Driver,
    block: Looped<Block>,
    _disk: File,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let disk = memfd(&vec![0x5a; (SECTORS * 512) as usize]);
        State {
            driver: Driver::new(),
            block: Looped::new(block_over(&disk)),
            _disk: disk,
        }
    });
}

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
/// Writes guest memory (rings and buffers), as the driver would before DRIVER_OK.
pub const OP_MEMORY: u8 = 2;

pub fn run_mmio(data: &[u8]) {
    STATE.with_borrow_mut(|state| {
        state.block.lock().reset();
        state.driver.clear();
        state.block.settle();
        let device: Arc<Mutex<dyn VirtioDevice>> = state.block.device.clone();
        let mut transport = MmioTransport::new(state.driver.mem.clone(), device);
        let mut input = Input::new(data);
        while !input.is_empty() {
            let op = input.u8() % 3;
            if op == OP_MEMORY {
                state.driver.op(crate::driver::OP_WRITE, &mut input);
                continue;
            }
            // Mostly the registers and the start of config space; sometimes anywhere.
            let offset = match input.u8() % 4 {
                0 => u64::from(input.u16()) % MMIO_SLOT_SIZE,
                _ => u64::from(input.u8() & 0xfc) | u64::from(input.u8() % 2) << 8,
            };
            let len = [4, 1, 2, 8, 3, 0][usize::from(input.u8() % 6)];
            let mut bytes = [0u8; 8];
            if op == OP_READ {
                transport.read(offset, &mut bytes[..len]);
            } else {
                bytes = input.u64().to_le_bytes();
                transport.write(offset, &bytes[..len]);
                state.block.settle();
            }
        }
    });
}
