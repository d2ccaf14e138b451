//! A small `log` backend: one line per record, written with a single `write` so lines from
//! several threads never interleave. In the guest it writes to the serial console.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    sink: Mutex<Box<dyn Write + Send>>,
    start: Instant,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let elapsed = self.start.elapsed();
        let line = format!(
            "[{:>5}.{:03}] rust-vm-agent {:<5} {}\n",
            elapsed.as_secs(),
            elapsed.subsec_millis(),
            record.level(),
            record.args()
        );
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere left to report a failing log sink.
        let _ = sink.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = self.sink.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

/// Starts logging to stderr.
pub fn init(level: LevelFilter) {
    let logger = LOGGER.get_or_init(|| Logger {
        sink: Mutex::new(Box::new(std::io::stderr())),
        start: Instant::now(),
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Sends further log lines to `console` (the guest's serial console, once /dev exists).
pub fn use_console(console: File) {
    if let Some(logger) = LOGGER.get() {
        *logger.sink.lock().unwrap_or_else(|e| e.into_inner()) = Box::new(console);
    }
}
