//! virtio-fs against a fake vhost-user back-end: negotiation, what activation hands over
//! (memory, rings, kick and call fds), reset, and the ways a back-end can be missing or fail.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::SubscriberOps;
use vhost::vhost_user::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MmapRegion,
};
use vmm_sys_util::tempdir::TempDir;

use super::test_backend::{serve, serve_and_close, Options, Ring, Served, FEATURES};
use super::{Fs, FsDeviceConfig, FsError};
use crate::devices::bus::BusDevice;
use crate::devices::virtio::test_utils::{activate, guest_memory, GuestQueue, MEM_SIZE};
use crate::devices::virtio::{
    error_chain, ActivateError, MmioTransport, VirtioDevice, IRQ_CONFIG, IRQ_VRING,
};
use crate::vstate::memory::{self, Backing};
use crate::{EventManager, GuestMemory};

const QUEUE_SIZE: u16 = 16;
const HIGH_RAM: u64 = 0x1_0000_0000;
const PROTOCOL_BIT: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
const GUEST_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;

fn config(socket: &Path, request_queues: u16) -> FsDeviceConfig {
    FsDeviceConfig {
        socket: socket.to_owned(),
        tag: "share".to_string(),
        request_queues,
        queue_size: QUEUE_SIZE,
    }
}

/// Guest RAM as the builder makes it for virtio-fs: two regions of one memfd.
fn shared_memory() -> GuestMemory {
    let ranges = [
        (GuestAddress(0), MEM_SIZE as usize),
        (GuestAddress(HIGH_RAM), 0x10_0000),
    ];
    memory::create(&ranges, Backing::SharedMemfd).unwrap()
}

/// A device on a fresh back-end, with its queues laid out by a guest driver (the request queue
/// in the high region) but not yet activated.
struct Setup {
    served: Served,
    device: Fs,
    mem: GuestMemory,
    queues: [GuestQueue; 2],
}

fn setup(options: Options) -> Setup {
    let served = serve(options);
    let device = Fs::new(&config(&served.socket, 1)).unwrap();
    let mem = shared_memory();
    let queues = [
        GuestQueue::new(&mem, 0x1_0000, QUEUE_SIZE),
        GuestQueue::new(&mem, HIGH_RAM + 0x1000, QUEUE_SIZE),
    ];
    Setup {
        served,
        device,
        mem,
        queues,
    }
}

impl Setup {
    fn activate(&mut self) {
        let [hiprio, request] = &self.queues;
        activate(&mut self.device, &self.mem, &[hiprio, request]);
    }
}

/// Waits for a back-end without REPLY_ACK to have taken what was sent to it.
fn wait_for(served: &Served, done: impl Fn(&super::test_backend::Record) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(&served.record().record) {
        assert!(
            Instant::now() < deadline,
            "the back-end did not get the requests"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn host(mem: &GuestMemory, addr: u64) -> u64 {
    mem.get_host_address(GuestAddress(addr)).unwrap() as u64
}

#[test]
fn config_space_holds_the_nul_padded_tag_and_the_request_queue_count() {
    let served = serve(Options {
        queue_num: 4,
        ..Options::default()
    });
    let device = Fs::new(&config(&served.socket, 3)).unwrap();
    assert_eq!(device.device_type(), 26);
    assert_eq!(device.queues().len(), 4);
    assert!(device.queues().iter().all(|q| q.max_size() == QUEUE_SIZE));

    let mut space = [0xffu8; 44];
    device.read_config(0, &mut space);
    assert_eq!(&space[..5], b"share");
    assert_eq!(space[5..36], [0; 31]);
    assert_eq!(space[36..40], 3u32.to_le_bytes());
    assert_eq!(space[40..], [0; 4], "past the config space reads zero");

    // A 36-byte tag fills the field with no NUL.
    let served = serve(Options::default());
    let tag = "t".repeat(36);
    let device = Fs::new(&FsDeviceConfig {
        tag: tag.clone(),
        ..config(&served.socket, 1)
    })
    .unwrap();
    let mut field = [0u8; 36];
    device.read_config(0, &mut field);
    assert_eq!(&field, tag.as_bytes());
}

#[test]
fn offers_the_guest_the_backend_features_it_understands_and_never_the_protocol_bit() {
    let served = serve(Options::default());
    let device = Fs::new(&config(&served.socket, 1)).unwrap();
    assert_eq!(device.avail_features(), GUEST_FEATURES);
    assert_eq!(device.avail_features() & PROTOCOL_BIT, 0);

    let backend = served.record();
    assert!(backend.record.owner);
    let wanted = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
    assert_eq!(backend.record.protocol, Some(wanted.bits()));
    drop(backend);

    // Only what the back-end offers reaches the guest.
    let served = serve(Options {
        features: FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX),
        ..Options::default()
    });
    let device = Fs::new(&config(&served.socket, 1)).unwrap();
    assert_eq!(
        device.avail_features(),
        GUEST_FEATURES & !(1 << VIRTIO_RING_F_EVENT_IDX)
    );
}

#[test]
fn activation_hands_the_backend_guest_memory_rings_and_eventfds() {
    let mut s = setup(Options::default());
    s.activate();
    assert!(s.device.is_activated());
    let backend = s.served.record();
    let record = &backend.record;

    // The driver's features, plus the vhost-user protocol bit.
    assert_eq!(record.features, vec![GUEST_FEATURES | PROTOCOL_BIT]);

    // Every region, with the VMM's address and its place in the memfd.
    assert_eq!(record.regions.len(), 2);
    let mut file_offset = 0;
    for (region, guest) in record.regions.iter().zip(s.mem.iter()) {
        assert_eq!(region.guest_phys_addr, guest.start_addr().0);
        assert_eq!(region.memory_size, guest.len());
        assert_eq!(region.user_addr, host(&s.mem, guest.start_addr().0));
        assert_eq!(region.mmap_offset, file_offset);
        file_offset += guest.len();
    }
    // The fd maps the guest's bytes: written through vm-memory, read through the back-end's map.
    for (at, region) in [0x5_0000, HIGH_RAM + 0x8_0000].iter().zip(&record.regions) {
        s.mem.write_slice(b"virtio-fs", GuestAddress(*at)).unwrap();
        let file = region.file.try_clone().unwrap();
        let file_offset = FileOffset::new(file, region.mmap_offset);
        let map = MmapRegion::<()>::from_file(file_offset, region.memory_size as usize).unwrap();
        let offset = (at - region.guest_phys_addr) as usize;
        // SAFETY: `offset + 9` lies within the mapping, which lives for the read.
        let seen = unsafe { std::slice::from_raw_parts(map.as_ptr().add(offset), 9) };
        assert_eq!(seen, b"virtio-fs");
    }

    // Ring addresses are the VMM's virtual addresses of the guest's rings.
    for (index, queue) in s.queues.iter().enumerate() {
        let index = index as u32;
        let expected = Ring {
            desc: host(&s.mem, queue.desc),
            used: host(&s.mem, queue.used),
            avail: host(&s.mem, queue.avail),
        };
        assert_eq!(record.rings[&index], expected);
        assert_eq!(record.nums[&index], u32::from(QUEUE_SIZE));
        assert_eq!(record.bases[&index], 0);
        assert!(record.enabled[&index]);
    }
    drop(backend);

    // A guest kick (the ioeventfd KVM signals) reaches the back-end's kick fd.
    s.device.queue_events()[1].write(1).unwrap();
    let mut kick = s.served.record().record.kicks[&1].try_clone().unwrap();
    let mut count = [0u8; 8];
    kick.read_exact(&mut count).unwrap();
    assert_eq!(u64::from_ne_bytes(count), 1);

    // The back-end's call reaches the irqfd, and InterruptStatus says VRING even after an ack.
    let mut call: File = s.served.record().record.calls[&0].try_clone().unwrap();
    call.write_all(&1u64.to_ne_bytes()).unwrap();
    let irq = s.device.interrupt();
    assert_eq!(irq.event().read().unwrap(), 1);
    assert_eq!(irq.status() & IRQ_VRING, IRQ_VRING);
    irq.ack(IRQ_VRING);
    assert_eq!(irq.status() & IRQ_VRING, IRQ_VRING);
}

#[test]
fn the_vmm_does_not_consume_kicks() {
    let mut s = setup(Options::default());
    s.activate();
    let device = Arc::new(Mutex::new(s.device));
    let mut event_manager = EventManager::new().unwrap();
    event_manager.add_subscriber(device.clone());
    device.lock().unwrap().queue_events()[0].write(1).unwrap();
    event_manager.run_with_timeout(50).unwrap();
    let mut kick = s.served.record().record.kicks[&0].try_clone().unwrap();
    let mut count = [0u8; 8];
    kick.read_exact(&mut count).unwrap();
    assert_eq!(u64::from_ne_bytes(count), 1);
}

#[test]
fn without_protocol_features_rings_are_not_enabled_explicitly() {
    let mut s = setup(Options {
        features: FEATURES & !PROTOCOL_BIT,
        ..Options::default()
    });
    assert_eq!(s.device.avail_features(), GUEST_FEATURES);
    s.activate();
    // No REPLY_ACK: the requests are in flight when activation returns.
    wait_for(&s.served, |r| r.kicks.len() == 2);
    let backend = s.served.record();
    assert_eq!(backend.record.protocol, None);
    assert_eq!(backend.record.features, vec![GUEST_FEATURES]);
    assert!(backend.record.enabled.is_empty());
}

#[test]
fn reset_stops_the_rings_and_returns_to_before_activation() {
    let mut s = setup(Options::default());
    s.activate();
    s.device.reset();
    assert!(!s.device.is_activated());
    assert_eq!(s.device.acked_features(), 0);
    assert_eq!(s.device.interrupt().status(), 0);
    {
        let backend = s.served.record();
        assert_eq!(backend.record.stopped, vec![0, 1]);
        assert!(backend.record.enabled.values().all(|&on| !on));
    }

    // The driver can start the device again.
    s.activate();
    assert!(s.device.is_activated());
    let backend = s.served.record();
    assert_eq!(backend.record.features.len(), 2);
    assert!(backend.record.enabled.values().all(|&on| on));
}

#[test]
fn reset_before_activation_sends_nothing() {
    let mut s = setup(Options::default());
    s.device.reset();
    assert!(s.served.record().record.stopped.is_empty());
}

fn write(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

fn read(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(u64::from(offset), &mut data);
    u32::from_le_bytes(data)
}

#[test]
fn a_backend_refusing_activation_leaves_the_device_needing_reset() {
    let s = setup(Options {
        refuse_mem_table: true,
        ..Options::default()
    });
    let device = Arc::new(Mutex::new(s.device));
    let mut t = MmioTransport::new(s.mem.clone(), device.clone());
    let ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    write(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    write(&mut t, VIRTIO_MMIO_STATUS, ack_driver);
    write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    let features_ok = ack_driver | VIRTIO_CONFIG_S_FEATURES_OK;
    write(&mut t, VIRTIO_MMIO_STATUS, features_ok);
    for (index, queue) in s.queues.iter().enumerate() {
        write(&mut t, VIRTIO_MMIO_QUEUE_SEL, index as u32);
        write(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(queue.size));
        for (low, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, queue.desc),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, queue.avail),
            (VIRTIO_MMIO_QUEUE_USED_LOW, queue.used),
        ] {
            write(&mut t, low, addr as u32);
            write(&mut t, low + 4, (addr >> 32) as u32);
        }
        write(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    write(
        &mut t,
        VIRTIO_MMIO_STATUS,
        features_ok | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    let status = read(&mut t, VIRTIO_MMIO_STATUS);
    assert_eq!(status & VIRTIO_CONFIG_S_DRIVER_OK, 0);
    assert_ne!(status & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    // The config interrupt the transport raised, and no sticky VRING from the failed start.
    assert_eq!(read(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), IRQ_CONFIG);
    assert!(!device.lock().unwrap().is_activated());
}

#[test]
fn anonymous_guest_memory_cannot_be_shared_and_fails_activation() {
    let mut s = setup(Options::default());
    let mem = guest_memory();
    let hiprio = GuestQueue::new(&mem, 0x1_0000, QUEUE_SIZE);
    let request = GuestQueue::new(&mem, 0x2_0000, QUEUE_SIZE);
    s.device.set_acked_features(s.device.avail_features());
    for (guest, queue) in [&hiprio, &request].iter().zip(s.device.queues_mut()) {
        guest.configure(queue);
    }
    assert_eq!(s.device.activate(mem), Err(ActivateError::Backend));
    assert!(!s.device.is_activated());
    assert_eq!(s.device.interrupt().status(), 0);
}

#[test]
fn a_missing_socket_is_an_error_naming_the_path_and_the_tag() {
    let dir = TempDir::new().unwrap();
    let socket = dir.as_path().join("absent.sock");
    let err = Fs::new(&config(&socket, 1)).err().unwrap();
    assert!(matches!(err, FsError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&*socket.to_string_lossy()), "{message}");
    assert!(message.contains("\"share\""), "{message}");
    // The cause is left to the chain, not repeated.
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(!message.contains(&source), "{message}");
    assert!(error_chain(&err).ends_with(&source));
}

#[test]
fn a_backend_that_hangs_up_at_once_is_an_error_naming_the_path_and_the_tag() {
    let (_dir, socket) = serve_and_close();
    let err = Fs::new(&config(&socket, 1)).err().unwrap();
    assert!(matches!(err, FsError::Request { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&*socket.to_string_lossy()), "{message}");
    assert!(message.contains("\"share\""), "{message}");
}

#[test]
fn a_backend_with_too_few_queues_or_no_version_1_is_refused() {
    let served = serve(Options::default());
    let err = Fs::new(&config(&served.socket, 2)).err().unwrap();
    assert!(
        matches!(
            err,
            FsError::TooManyQueues {
                offered: 2,
                wanted: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("2 request queues"), "{err}");

    let served = serve(Options {
        features: FEATURES & !(1 << VIRTIO_F_VERSION_1),
        ..Options::default()
    });
    let err = Fs::new(&config(&served.socket, 1)).err().unwrap();
    assert!(matches!(err, FsError::LegacyBackend { .. }), "{err:?}");
}

#[test]
fn a_backend_hang_up_ends_the_vm_and_is_no_longer_watched() {
    let mut s = setup(Options::default());
    s.activate();
    let exit = Arc::new(crate::vstate::VmExitSignal::new().unwrap());
    let device = Arc::new(Mutex::new(s.device.with_exit_signal(exit.clone())));
    let mut event_manager = EventManager::new().unwrap();
    event_manager.add_subscriber(device.clone());
    assert_eq!(event_manager.run_with_timeout(0).unwrap(), 0);

    s.served.hang_up();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !device.lock().unwrap().backend_gone() {
        assert!(Instant::now() < deadline, "the hang-up was not seen");
        event_manager.run_with_timeout(100).unwrap();
    }
    let reason = exit.reason().expect("the VM is told to stop");
    assert!(!reason.is_clean());
    assert!(reason.to_string().contains("virtio-fs"), "{reason}");
    // The socket is no longer watched: the loop stays idle instead of spinning on the hang-up.
    for _ in 0..5 {
        assert_eq!(event_manager.run_with_timeout(20).unwrap(), 0);
    }
}

#[test]
#[ignore = "needs /dev/kvm"]
fn attaches_to_a_vm_with_its_ioeventfds_and_irqfd() {
    use crate::devices::bus::Bus;
    use crate::devices::virtio::{attach_mmio_device, MmioSlot};

    let s = setup(Options::default());
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let bus = Bus::new();
    let mut event_manager = EventManager::new().unwrap();
    let slot = MmioSlot {
        base: 0xd000_0000,
        gsi: 5,
    };
    let device = Arc::new(Mutex::new(s.device));
    attach_mmio_device(&vm, &bus, &mut event_manager, &s.mem, device, slot).unwrap();
    let mut word = [0u8; 4];
    assert!(bus.read(0xd000_0008, &mut word));
    assert_eq!(u32::from_le_bytes(word), 26, "virtio-fs device ID");
    let mut tag = [0u8; 5];
    assert!(bus.read(0xd000_0100, &mut tag));
    assert_eq!(&tag, b"share");
}
