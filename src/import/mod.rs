//! The pure half of `psi infisical import`: readers that turn text into keys and values
//! ([`env`](mod@env) for env files, [`quadlet`] for quadlet files), the planner that decides each
//! key's fate from what the target folder holds ([`plan`]), and the report ([`report`]).
//! None of it touches the file system, Podman or the network: the command
//! ([`crate::commands::infisical_import`]) reads the sources, lists the folder, writes the
//! plan and prints the report. Values zeroize on drop and never appear in warnings.

pub mod env;
pub mod plan;
pub mod quadlet;
pub mod report;

use zeroize::Zeroizing;

pub use env::parse_env;
pub use quadlet::{parse_quadlet, SecretRef};

/// One key read from a source. The value zeroizes on drop.
pub struct Found {
    pub key: String,
    pub value: Zeroizing<String>,
    pub source: String,
}

/// A key read that could not be given a value (an unreadable Podman secret).
pub struct Unreadable {
    pub key: String,
    pub source: String,
    pub why: String,
}

/// Keys as Infisical and shells accept them: letters, digits, `_`, `-`, `.`; not empty.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers shared by the readers' tests.

    use super::Found;

    /// The keys and values read, in order.
    pub(crate) fn pairs(found: &[Found]) -> Vec<(String, String)> {
        found
            .iter()
            .map(|f| (f.key.clone(), f.value.as_str().to_owned()))
            .collect()
    }

    pub(crate) fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    /// Runs `parse` on another thread and fails unless it returns within `limit`. The inputs
    /// of the readers' linear-time tests took the quadratic readers 45 seconds or more even in a release build; the linear
    /// ones read them in well under a second in a debug build, so the bound is far from both.
    pub(crate) fn finishes_within(
        limit: std::time::Duration,
        parse: impl FnOnce() + Send + 'static,
    ) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            parse();
            let _ = done.send(());
        });
        match finished.recv_timeout(limit) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the reader took longer than {limit:?}: not linear in its input")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the reader panicked"),
        }
    }
}
