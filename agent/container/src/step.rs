//! A failed step of a forked process (the intermediate, the container init or an exec'd
//! process): what was being done and the errno. It crosses to the agent as one line of text
//! in `Message::Error` (the agent's error is `ContainerError::InitFailed`), so its `Display`
//! is the whole story, cause included: there is no error chain on the other side.

use std::fmt;
use std::io;

/// A failed step in the container process: what was being done, and the errno.
#[derive(Debug)]
pub struct StepError {
    what: String,
    source: io::Error,
}

impl StepError {
    pub fn new(what: impl Into<String>, source: io::Error) -> Self {
        StepError {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

/// `.ctx(|| "what".into())` on an `io::Result` names the step that failed.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StepError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StepError> {
        self.map_err(|e| StepError::new(what(), e))
    }
}
