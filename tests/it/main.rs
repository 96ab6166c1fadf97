//! psi's integration tests: one binary, one module per theme. New tests go in the module of
//! their theme; shared fixtures (temp dirs, the psi binary, systemd-creds with a per-test host
//! key, the Podman harness, a raw HTTP client) live in `support`.
//!
//! Real parts throughout: systemd-creds, Podman, curl. A test whose tool is missing skips with
//! a message, except under `CI=true`, where it fails.

mod support;

mod appliance;
mod boot;
mod butane;
mod cache;
mod cache_serve;
mod cli;
mod client;
mod compat;
mod config;
mod creds;
mod fleet;
mod help;
mod ids;
mod image;
mod infisical_cli;
mod infisical_client;
mod infisical_fake;
mod infisical_import;
mod infisical_tls;
mod metrics;
mod nitrokeyhsm;
mod nitrokeyhsm_cli;
mod parity;
mod pcscd;
mod podman;
mod podman5;
mod podman_api;
mod reads;
mod routes;
mod server;
mod setup;
mod status;
mod units;
