//! psi, Podman Secret Infrastructure: a Podman shell secret driver with pluggable providers.
//!
//! Podman keeps only a *mapping* (which provider, where the value lives); at container start
//! its shell driver asks `psi serve` over a Unix socket, and psi resolves the value from the
//! provider. No plaintext secret is written to disk.
//!
//! # Layout
//!
//! - [`cli`]: the clap command tree; no I/O.
//! - [`error`]: the one error type, with exit codes and HTTP statuses.
//! - [`config`]: settings resolved once: `Settings` and the precedence (`mod.rs`), the
//!   `config.yaml` schema (`schema`; typed scalars in `values`, durations in `duration`), the
//!   scope path table (`scope`), loading and credentials (`load`), checks across keys
//!   (`validate`), YAML error messages (`yaml_error`).
//! - [`timefmt`]: UTC calendar time for the few timestamps psi prints.
//! - [`secret`]: `SecretId`, `Mapping` (the wire JSON), `SecretValue`.
//! - [`pyjson`]: Python-compatible JSON text for the original's byte-exact formats.
//! - [`crypto`]: pure cryptography on bytes: AES-GCM, RSA-OAEP (and its software decoding),
//!   the Nitrokey hybrid envelope, HMAC-SHA256.
//! - [`cache`]: the encrypted secret cache: the in-memory entries keyed by HMAC digests of
//!   mappings, the `cache.enc` file format (`format`, pure) and its TPM/HSM key backends.
//! - [`fsutil`]: atomic writes with the mode set at open, write-if-changed, private
//!   directories; reads capped by kind of file that never block on a FIFO or device.
//! - [`body`]: HTTP bodies collected into a zeroizing buffer with a cap.
//! - [`state`]: the state directory, the one place that knows its layout.
//! - [`import`]: the pure half of `psi infisical import`: the env-file and quadlet readers,
//!   the planner (each key's fate from what the target folder holds) and the report.
//! - [`podman`]: the libpod REST client on the Podman socket (secrets list/create/remove).
//! - [`process`]: child processes that inherit none of psi's credentials.
//! - [`provider`]: the `Provider` enum (lookup, seal, and `discover` where it applies) and
//!   registry; one module per provider: `creds` (systemd-creds), `infisical/` (HTTP client,
//!   auth and token cache, SigV4, listings, PKI and the inspection of the certificates it
//!   issues), `nitrokeyhsm/` (PKCS#11 token on its own thread, hybrid envelope).
//! - [`metrics`]: the Prometheus metrics: lock-free counters serve keeps, the families the
//!   one-shots leave behind, the text exposition (`text`, pure) for `/metrics` and textfiles.
//! - [`resolver`]: the one resolver: secret ID -> value (cache in front, provider behind),
//!   store/delete/list, and a workload's secrets; shared by the server, the one-shot driver,
//!   `psi run` and `psi infisical import podman-secret`.
//! - [`server`]: the HTTP server on the Unix socket; `routes` is its pure core.
//! - [`setup`]: `psi setup` and `psi check`: discover (through the providers) -> a whole-run
//!   plan (pure data, what `--dry-run` prints) -> apply -> report.
//! - [`systemd`]: `systemctl [--user]`: daemon-reload, enable, start, unit properties.
//! - [`unitgen`]: pure renderers for generated files (`psi.conf`, quadlet drop-ins and their
//!   reader, the pcscd sidecar's Containerfile and quadlets, `units`: the appliance's
//!   services, quadlets and timers for `psi systemd install`, `butane`: Butane YAML and
//!   Ignition JSON).
//! - [`commands`]: one module per command group; the only place that builds a runtime.
//! - [`client`]: `psi client`, the driver commands as a minimal blocking HTTP client (no
//!   runtime, no logging), which `main.rs` dispatches first; also `psi healthcheck`. Its
//!   core, `client/lean.rs`, is also the whole of the `psi-client` binary (`src/bin/`).
//! - [`driver`]: which client the driver commands use (psi or curl) and the token file.
//! - [`encoding`]: hex and percent-encoding, one of each.
//! - [`shell`]: POSIX shell variable names and single quoting.
#![deny(unsafe_code)]
// Module docs link private items on purpose: they are read beside the source, where the
// links resolve (`cargo doc --document-private-items`).
#![allow(rustdoc::private_intra_doc_links)]

pub mod body;
pub mod cache;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod driver;
pub mod encoding;
pub mod error;
pub mod fsutil;
pub mod import;
pub mod metrics;
pub mod podman;
pub mod process;
pub mod provider;
pub mod pyjson;
pub mod resolver;
pub mod secret;
pub mod server;
pub mod setup;
pub mod shell;
pub mod state;
pub mod systemd;
pub mod timefmt;
pub mod unitgen;
