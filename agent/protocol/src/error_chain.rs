//! Printing an error with its causes once.
//!
//! rust-vm's error messages never repeat their source (the source is the next link of the
//! chain), so an error that becomes text — a protocol error's message, a log line, a ttrpc
//! status for containerd — is printed with its whole chain, `: `-separated, like anyhow's `{:#}`.

use std::error::Error;
use std::fmt;

/// Displays an error and its sources: `outer: inner: root cause`.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The error and its sources as one line of text.
pub fn error_chain(err: &dyn Error) -> String {
    Chain(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /x")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn every_cause_once_in_order() {
        let err = Outer {
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(error_chain(&err), "reading /x: disk on fire");
    }
}
