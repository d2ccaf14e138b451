//! `start`: release the init blocked before exec and confirm the exec happened.

use super::channel::Message;
use super::create::unexpected;
use super::error::ContainerError;
use super::{Container, Status};

impl Container {
    /// Lets the init exec the container's program. Returns once exec succeeded (the setup
    /// channel closed on exec) or with the exec error.
    pub fn start(&mut self) -> Result<(), ContainerError> {
        let chan = match (&self.status, self.start_chan.take()) {
            (Status::Created, Some(chan)) => chan,
            (status, chan) => {
                self.start_chan = chan;
                return Err(ContainerError::InvalidState {
                    id: self.id.clone(),
                    operation: "start",
                    state: status.name(),
                });
            }
        };
        chan.send(&Message::Start)
            .map_err(|e| ContainerError::sys(&self.id, "releasing the init", e))?;
        let reply = chan
            .recv()
            .map_err(|e| ContainerError::sys(&self.id, "waiting for exec", e))?;
        match reply {
            None => {
                self.status = Status::Running;
                Ok(())
            }
            other => {
                // The init has exited (or will): the container is not usable any more.
                self.status = Status::Stopped;
                Err(unexpected(&self.id, other, "exec"))
            }
        }
    }
}
