//! `psi nitrokeyhsm ...`: the Nitrokey HSM provider's commands. `device.rs` talks to the
//! token (preflight, init, test-pin, status, store); `sidecar.rs` sets up the pcscd sidecar
//! that gives psi's container the USB reader.
//!
//! Stdout carries the report (`  PASS|WARN|FAIL|SKIP text` check lines, what was written,
//! what to do next); logs and errors go to stderr. A command that found a failure exits 1.

mod device;
mod sidecar;

use std::fmt;

use crate::cli::NitrokeyhsmCommand;
use crate::config::Settings;
use crate::error::Result;

pub async fn run(settings: &Settings, command: NitrokeyhsmCommand) -> Result<()> {
    match command {
        NitrokeyhsmCommand::SetupPcscd(args) => sidecar::setup_pcscd(settings, &args).await,
        NitrokeyhsmCommand::Preflight => device::preflight(settings).await,
        NitrokeyhsmCommand::Init => device::init(settings).await,
        NitrokeyhsmCommand::TestPin => device::test_pin(settings).await,
        NitrokeyhsmCommand::Status => device::status(settings).await,
        NitrokeyhsmCommand::Store(args) => device::store(settings, &args).await,
    }
}

/// The outcome of one check, printed as `  STATUS text` (the original's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// One check line and, for a warning or failure, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub text: String,
    pub hint: Option<String>,
}

impl Check {
    fn new(status: Status, text: impl Into<String>) -> Check {
        Check {
            status,
            text: text.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Check {
        self.hint = Some(hint.into());
        self
    }

    fn render(&self) -> String {
        let mut out = format!("  {} {}\n", self.status, self.text);
        if let Some(hint) = &self.hint {
            out.push_str(&format!("       {hint}\n"));
        }
        out
    }
}

fn say(text: &str) -> Result<()> {
    super::write_stdout(text.as_bytes())
}
