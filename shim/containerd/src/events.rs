//! Task events to containerd (create, start, exit, exec-added, exec-started, OOM, delete).
//!
//! Events leave from one thread, in the order they were sent, so that containerd never sees an
//! exit before the start it follows. When containerd is away (restarting), the thread
//! reconnects and retries for a while instead of dropping the event.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

/// How often a failed publish is tried again (with the delay doubling up to the cap) before
/// the event is given up: about half a minute, enough for containerd to restart.
const RETRIES: u32 = 20;
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

pub fn now() -> Timestamp {
    Timestamp::now()
}

struct Event {
    topic: &'static str,
    message: Box<dyn MessageDyn>,
}

/// Queue of events to containerd, drained by a background thread.
pub struct EventSender {
    tx: Mutex<Sender<Event>>,
}

impl EventSender {
    pub fn start(publisher: RemotePublisher, namespace: String) -> EventSender {
        let (tx, rx) = mpsc::channel();
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let spawned = thread::Builder::new()
            .name("events".into())
            .spawn(move || forward(publisher, &address, &namespace, rx));
        if let Err(err) = spawned {
            log::error!("cannot start the event thread, events are lost: {err}");
        }
        EventSender { tx: Mutex::new(tx) }
    }

    /// An event sender that only queues: for unit tests of the task service.
    #[cfg(test)]
    pub fn detached() -> (EventSender, Receiver<(&'static str, String)>) {
        let (tx, rx) = mpsc::channel::<Event>();
        let (names_tx, names_rx) = mpsc::channel();
        thread::spawn(move || {
            for event in rx {
                let name = event.message.descriptor_dyn().name().to_owned();
                if names_tx.send((event.topic, name)).is_err() {
                    break;
                }
            }
        });
        (EventSender { tx: Mutex::new(tx) }, names_rx)
    }

    fn send(&self, topic: &'static str, message: Box<dyn MessageDyn>) {
        let tx = match self.tx.lock() {
            Ok(tx) => tx,
            Err(poisoned) => poisoned.into_inner(),
        };
        if tx.send(Event { topic, message }).is_err() {
            log::warn!("event thread is gone; {topic} event dropped");
        }
    }

    pub fn task_create(&self, event: TaskCreate) {
        self.send(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event));
    }

    pub fn task_start(&self, container_id: &str, pid: u32) {
        self.send(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: container_id.to_owned(),
                pid,
                ..Default::default()
            }),
        );
    }

    pub fn task_exit(&self, container_id: &str, id: &str, pid: u32, status: u32, at: Timestamp) {
        self.send(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: container_id.to_owned(),
                id: id.to_owned(),
                pid,
                exit_status: status,
                exited_at: Some(at).into(),
                ..Default::default()
            }),
        );
    }

    pub fn task_delete(&self, container_id: &str, pid: u32, status: u32, at: Timestamp) {
        self.send(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: container_id.to_owned(),
                id: container_id.to_owned(),
                pid,
                exit_status: status,
                exited_at: Some(at).into(),
                ..Default::default()
            }),
        );
    }

    pub fn exec_added(&self, container_id: &str, exec_id: &str) {
        self.send(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: container_id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            }),
        );
    }

    pub fn exec_started(&self, container_id: &str, exec_id: &str, pid: u32) {
        self.send(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: container_id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
                ..Default::default()
            }),
        );
    }

    pub fn task_oom(&self, container_id: &str) {
        self.send(
            topics::TASK_OOM_EVENT_TOPIC,
            Box::new(TaskOOM {
                container_id: container_id.to_owned(),
                ..Default::default()
            }),
        );
    }
}

fn forward(mut publisher: RemotePublisher, address: &str, namespace: &str, rx: Receiver<Event>) {
    for event in rx {
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let message = match clone_message(event.message.as_ref()) {
                Ok(message) => message,
                Err(err) => {
                    log::error!("{} event cannot be encoded: {err}", event.topic);
                    break;
                }
            };
            match publisher.publish(Context::default(), event.topic, namespace, message) {
                Ok(()) => break,
                Err(err) if attempt < RETRIES => {
                    log::debug!("publish {} failed ({err}), retrying", event.topic);
                    thread::sleep(delay);
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                    // After a containerd restart the old connection is dead for good.
                    if let Ok(fresh) = RemotePublisher::new(address) {
                        publisher = fresh;
                    }
                }
                Err(err) => {
                    log::error!("{} event lost after {RETRIES} retries: {err}", event.topic);
                    break;
                }
            }
        }
    }
}

/// A copy to hand to the publisher, which consumes its argument, so a failed send can be retried.
fn clone_message(
    message: &dyn MessageDyn,
) -> containerd_shim::protos::protobuf::Result<Box<dyn MessageDyn>> {
    let bytes = message.write_to_bytes_dyn()?;
    message.descriptor_dyn().parse_from_bytes(&bytes)
}
