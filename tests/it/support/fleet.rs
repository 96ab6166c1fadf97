//! A simulated psi host for rate-limit tests and the fleet bench: a config whose workloads
//! each read one folder of one Infisical project, a state directory of its own (the token
//! cache), and one setup run's discovery through psi's own code ([`Discoverer`], as
//! `psi setup` and `psi check` run it), on an injected clock.

use std::ffi::OsString;
use std::sync::Arc;

use psi::config::{Overrides, Settings};
use psi::provider::infisical::{Clock, Infisical};
use psi::provider::{Provider, Registry};
use psi::setup::discover::Discoverer;

pub const CLIENT_ID: &str = "fleet-client";
pub const CLIENT_SECRET: &str = "fleet-client-secret";

pub struct Host {
    pub settings: Settings,
    state: tempfile::TempDir,
}

impl Host {
    /// A host with `workloads` workloads, `appNN` reading folder `/wNN` of `project`.
    /// `infisical` is more of the `providers.infisical` block (indented by four spaces).
    pub fn new(url: &str, project: &str, workloads: usize, infisical: &str) -> Host {
        let state = tempfile::Builder::new()
            .prefix("psi-host.")
            .tempdir()
            .unwrap();
        let mut text = format!(
            "providers:\n  infisical:\n    api_url: {url}\n    auth: {{method: universal-auth, client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}}}\n    projects:\n      p: {{id: {project}, environment: prod}}\n{infisical}workloads:\n"
        );
        for w in 0..workloads {
            text.push_str(&format!(
                "  app{w:02}:\n    secrets:\n      - project: p\n        path: /w{w:02}\n"
            ));
        }
        let path = state.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let overrides = Overrides {
            config: Some(path),
            socket: None,
        };
        let settings = Settings::load(&overrides, &|_: &str| None::<OsString>, 0).unwrap();
        Host { settings, state }
    }

    /// One setup run's discovery with a new client (a run is a new process), every workload
    /// in order; the failed workloads with their errors.
    pub async fn discover(&self, clock: Arc<dyn Clock>) -> Vec<(String, String)> {
        let config = self.settings.providers.infisical.as_ref().unwrap();
        let client = Infisical::with_clock(config, self.state.path(), clock).unwrap();
        let registry = Registry::new(vec![Provider::Infisical(client)]);
        let mut discoverer = Discoverer::new(&registry);
        let mut failed = Vec::new();
        for (name, workload) in &self.settings.workloads {
            if let Err(err) = discoverer.workload(name, workload).await {
                failed.push((name.clone(), err.to_string()));
            }
        }
        failed
    }

    /// A client of this host's config on `clock` (for single calls).
    pub fn client(&self, clock: Arc<dyn Clock>) -> Infisical {
        let config = self.settings.providers.infisical.as_ref().unwrap();
        Infisical::with_clock(config, self.state.path(), clock).unwrap()
    }
}
