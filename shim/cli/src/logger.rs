//! A small `log` back-end: text or runc-style JSON lines (`{"level":..,"msg":..,"time":..}`,
//! what containerd parses from a runtime's `--log`), to stderr or to the `--log` file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

struct Logger {
    format: LogFormat,
    file: Option<Mutex<File>>,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level().as_str().to_ascii_lowercase();
        let line = match self.format {
            // On a terminal: short, like other command-line tools.
            LogFormat::Text if self.file.is_none() => {
                format!("rust-vm: {level}: {}\n", record.args())
            }
            LogFormat::Text => format!(
                "{} {level:5} rust-vm[{}]: {}\n",
                crate::state::rfc3339_now(),
                std::process::id(),
                record.args()
            ),
            LogFormat::Json => {
                let v = serde_json::json!({
                    "level": level,
                    "msg": record.args().to_string(),
                    "time": crate::state::rfc3339_now(),
                });
                format!("{v}\n")
            }
        };
        match &self.file {
            Some(file) => {
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

pub fn init(path: Option<&Path>, format: LogFormat, level: log::LevelFilter) -> Result<()> {
    let file = match path {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?,
        )),
        None => None,
    };
    log::set_boxed_logger(Box::new(Logger {
        format,
        file,
        level,
    }))
    .context("installing the logger")?;
    log::set_max_level(level);
    Ok(())
}
