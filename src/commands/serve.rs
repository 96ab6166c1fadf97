//! `psi serve`: raise the open-file limit, open providers, take the socket (from systemd or
//! bound here), tell systemd we are ready, serve until SIGTERM/SIGINT, finish in-flight
//! requests within the grace period, clean up.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use crate::cache::{self, live::LiveCache};
use crate::config::{process_env, CredentialSource, Settings};
use crate::error::{Error, Result};
use crate::resolver::{CacheState, Resolver};
use crate::server::{self, App};

/// How long start-up waits for the first cache load before taking requests anyway (a TPM
/// key loads a 10,000-entry cache in milliseconds; a slow token must not hold up `/healthz`:
/// the load then finishes in the background and lookups go to the providers meanwhile).
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(settings: Settings) -> Result<()> {
    raise_open_file_limit();
    one_malloc_arena();
    if !settings.config_found {
        tracing::info!(
            config = %settings.config_path.display(),
            "no config file; running with defaults (provider: systemd-creds)"
        );
    }
    let mut resolver = Resolver::from_settings(&settings)?;
    resolver.set_cache(open_cache(&settings, &resolver).await);
    let scrape = crate::metrics::Scrape::from_settings(&settings);
    // Configured, not yet connected: Infisical logs in and the HSM opens its session on the
    // first lookup (they log their own `provider.open`), so start-up never waits on them.
    for name in resolver.registry().names() {
        tracing::info!(
            event = "provider.ready",
            provider = name,
            "provider configured"
        );
    }
    let token = settings.socket_token.map(|(token, source)| {
        let source = match source {
            CredentialSource::CredentialsDirectory => "credentials directory",
            CredentialSource::ConfigFile => "config file",
            CredentialSource::Environment => "environment",
        };
        tracing::info!(source, "socket auth enabled");
        token
    });
    if token.is_none() {
        tracing::info!("socket auth disabled: no token configured");
    }
    let bound = match server::from_systemd(&process_env)? {
        Some(bound) => bound,
        None => server::bind(&settings.socket_path)?,
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| Error::Io {
        context: "SIGTERM handler".into(),
        source: e,
    })?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| Error::Io {
        context: "SIGINT handler".into(),
        source: e,
    })?;
    tracing::info!(socket = %settings.socket_path.display(), activated = bound.file.activated(), "listening");
    server::notify(&process_env, "READY=1");
    release_start_up_pages();

    let shutdown = async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping: finishing in-flight requests");
        server::notify(&process_env, "STOPPING=1");
    };
    let mut app = App::new(resolver, token, server::Limits::default());
    app.scrape = scrape;
    let app = Arc::new(app);
    let result = server::run(bound.listener, app, shutdown).await;
    bound.file.remove();
    // A request that outlived the grace period was cut off: psi still stops as asked (the
    // caller drops the runtime without waiting for it), and the log says so.
    result.map(|_| ())
}

/// Raises the soft limit on open files to the hard limit. Every connection is a file
/// descriptor, and the soft limit is usually 1,024 (systemd's default and most shells'):
/// far too close to [`server::Limits::max_connections`] plus what the providers open. The
/// hard limit is the administrator's ceiling (`LimitNOFILE=` in the units sets it).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let result = getrlimit(Resource::RLIMIT_NOFILE).and_then(|(soft, hard)| {
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
        Ok((soft, hard))
    });
    match result {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "open-file limit raised to the hard limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
}

/// The encrypted cache, if configured: its backend opened and its first load started.
async fn open_cache(settings: &Settings, resolver: &Resolver) -> CacheState {
    match cache::Backend::from_settings(settings, resolver.registry()) {
        Ok(None) => {
            tracing::info!(
                event = "cache.open",
                outcome = "disabled",
                "secret cache disabled (cache.enabled or cache.backend)"
            );
            CacheState::Disabled
        }
        Ok(Some(backend)) => {
            let path = settings.cache.path.clone();
            let (live, first_load) = LiveCache::start(path, backend, settings.cache.watch_interval);
            if tokio::time::timeout(CACHE_WAIT, first_load).await.is_err() {
                tracing::warn!(event = "cache.open", "the secret cache is still loading; serving from the providers until it is ready");
            }
            CacheState::Live(live)
        }
        Err(err) => {
            tracing::warn!(event = "cache.open", outcome = "error", error = %err, "secret cache backend unavailable; falling back to live provider lookups");
            CacheState::Unavailable(err.to_string())
        }
    }
}

/// Keeps every allocation in glibc's main arena. serve allocates from one thread, plus
/// blocking-pool threads now and then; each of those would otherwise get an arena of its
/// own whose freed memory stays with the process (about 2 MiB of RSS for nothing).
#[allow(unsafe_code)]
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Unmaps the pages of psi's executable once start-up is over. Reading the CLI and the
/// config, setting up logging, TLS and the providers touch code and data that requests never
/// use again, and with the kernel's fault-around each touched page maps its neighbours too:
/// several MiB of the resident set that only start-up needed. `MADV_DONTNEED` on a mapping
/// with no private dirty page only drops this process's page-table entries: the pages stay
/// in the page cache, and the code a request runs is mapped back on its first use. Mappings
/// with dirty pages (the relocated read-only data, a debugger's breakpoints) are left alone:
/// for them it would discard what was written.
#[allow(unsafe_code)]
fn release_start_up_pages() {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) else {
        return;
    };
    for (start, end) in clean_mappings_of(&smaps, &exe) {
        // SAFETY: the range is a mapping of this process's executable with no private dirty
        // page (from its own smaps), so dropping its page-table entries loses no data; the
        // pages fault back in from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The address ranges of `exe`'s read-only mappings with no private dirty page, from
/// `/proc/self/smaps` text.
fn clean_mappings_of(smaps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    let mut clean = Vec::new();
    // The current mapping's range, while its fields are read.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: start-end perms offset dev inode path
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(start), Ok(end))
                    if !perms.contains('w') && std::path::Path::new(path) == exe =>
                {
                    Some((start, end))
                }
                _ => None,
            };
        } else if first == "Private_Dirty:" {
            if let (Some(range), Some("0")) = (current.take(), fields.next()) {
                clean.push(range);
            }
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn only_the_executables_clean_read_only_mappings_are_released() {
        let smaps = "\
5600-5700 r--p 00000000 08:01 42 /usr/bin/psi
Size:                  4 kB
Private_Dirty:         0 kB
5700-5800 r-xp 00001000 08:01 42 /usr/bin/psi
Private_Dirty:         0 kB
5800-5900 r--p 00002000 08:01 42 /usr/bin/psi
Private_Dirty:         8 kB
5900-5a00 rw-p 00003000 08:01 42 /usr/bin/psi
Private_Dirty:         0 kB
7000-7100 r-xp 00000000 08:01 7 /usr/lib/libc.so.6
Private_Dirty:         0 kB
";
        assert_eq!(
            super::clean_mappings_of(smaps, Path::new("/usr/bin/psi")),
            vec![(0x5600, 0x5700), (0x5700, 0x5800)]
        );
    }
}
