//! One module per command group, each with one entry function. This is the only place a
//! tokio runtime is built: commands that need async get one, the rest stay synchronous.

pub mod butane;
pub mod cache;
pub mod creds;
pub mod help;
pub mod infisical;
pub mod infisical_import;
pub mod infisical_tls;
pub mod install;
pub mod nitrokeyhsm;
pub mod run;
pub mod secret;
pub mod serve;
pub mod setup;
pub mod status;
pub mod systemd;

use std::future::Future;

use crate::cli::{Cli, Command};
use crate::config::{Overrides, Settings};
use crate::error::{Error, Result, ResultExt};
use crate::secret::SecretId;

/// Runs every command but `psi client`, which `main.rs` dispatches before logging and
/// configuration (see [`crate::client`]).
pub fn run(cli: Cli) -> Result<()> {
    // Generated help needs no configuration: a broken config must not break tab completion.
    match &cli.command {
        Command::Completions(args) => return help::completions(args.shell),
        Command::Man(args) => return help::man(args),
        _ => {}
    }
    let overrides = Overrides {
        config: cli.config,
        socket: cli.socket,
    };
    let settings = Settings::load_for_process(&overrides)?;
    match cli.command {
        Command::Serve => {
            let runtime = serve_runtime()?;
            let result = runtime.block_on(serve::run(settings));
            // serve already gave in-flight requests their grace period: a thread stuck in a
            // blocking call (open() of a FIFO) must not keep the process from exiting, as
            // dropping the runtime would (it waits for blocking-pool threads).
            runtime.shutdown_background();
            result
        }
        Command::Install(args) => install::run(&settings, &args),
        // main.rs runs `psi client` before anything else; a caller of this library function
        // that hands it one gets told so instead of a panic.
        Command::Client(_) => Err(Error::Usage(
            "psi client runs from main, before configuration is loaded".into(),
        )),
        Command::Secret(command) => block_on(secret::run(&settings, command)),
        Command::Creds(command) => block_on(creds::run(&settings, command)),
        Command::Setup(args) => block_on(setup::setup(&settings, &args)),
        Command::Check(args) => block_on(setup::check(&settings, &args)),
        Command::Nitrokeyhsm(command) => block_on(nitrokeyhsm::run(&settings, command)),
        Command::Cache(command) => block_on(cache::run(&settings, command)),
        Command::Butane(args) => butane::run(&settings, &args),
        Command::Healthcheck(args) => {
            let token = settings.socket_token.as_ref().map(|(t, _)| t.expose());
            crate::client::healthcheck(&settings.socket_path, args.cache, token)
                .context("unhealthy")
        }
        Command::Status(args) => block_on(status::run(&settings, &args)),
        Command::Systemd(command) => block_on(systemd::run(&settings, command)),
        Command::Infisical(command) => block_on(infisical::run(settings, command)),
        Command::Run(args) => {
            let env = block_on(run::resolve(&settings, &args))?;
            Err(run::exec(&args.command, env))
        }
        // Answered above, before the configuration; the same answer if this is ever reached.
        Command::Completions(args) => help::completions(args.shell),
        Command::Man(args) => help::man(&args),
    }
}

fn block_on<T, F: Future<Output = Result<T>>>(future: F) -> Result<T> {
    runtime()?.block_on(future)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    build(&mut tokio::runtime::Builder::new_multi_thread())
}

/// psi serve's runtime: one thread. Its requests are short and its waits (providers,
/// children, the HSM's thread) asynchronous, so a second worker would mostly add the
/// wake-ups between threads that cost more than the requests themselves; file access
/// that may block goes to the blocking pool as before.
fn serve_runtime() -> Result<tokio::runtime::Runtime> {
    build(&mut tokio::runtime::Builder::new_current_thread())
}

fn build(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime> {
    builder.enable_all().build().map_err(|err| Error::Io {
        context: "cannot start the async runtime".into(),
        source: err,
    })
}

/// Reads all of stdin (at most `limit` bytes) into a buffer that zeroizes on drop.
pub fn read_stdin(limit: usize) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    crate::fsutil::read_bounded(std::io::stdin().lock(), 0, limit).map_err(|err| match err {
        crate::fsutil::Bounded::Over => {
            Error::InvalidBody(format!("stdin holds more than {limit} bytes"))
        }
        crate::fsutil::Bounded::Io(err) => Error::Io {
            context: "cannot read stdin".into(),
            source: err,
        },
    })
}

/// Podman refuses secret data above this many bytes (`maxSecretSize` in Podman 4 and 5).
const PODMAN_MAX_SECRET: usize = 512_000;

/// The value to seal for `psi <command> store NAME`: stdin, which must not be empty.
pub(crate) fn stdin_value(command: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let value = read_stdin(crate::server::routes::MAX_BODY)?;
    if value.is_empty() {
        return Err(Error::Usage(format!(
            "no value on stdin: pipe the secret in, e.g. printf %s \"$VALUE\" | psi {command} store NAME"
        )));
    }
    Ok(value)
}

/// What `creds store` and `nitrokeyhsm store` do with a sealed value's mapping: register it
/// with Podman (`--register`), or keep it in the state directory and say how to register it.
pub(crate) async fn keep_sealed(
    settings: &Settings,
    name: &SecretId,
    mapping: &[u8],
    provider: &'static str,
    register_now: bool,
) -> Result<()> {
    if register_now {
        return register(settings, name, mapping, provider).await;
    }
    let state = crate::state::StateDir::new(&settings.state_dir);
    state.write_mapping(name, mapping)?;
    let path = state.mapping_path(name);
    tracing::info!(event = "secret.store", secret_id = %name, provider, outcome = "success", path = %path.display(), "sealed");
    eprintln!(
        "Sealed {name} into {}.\nRegister it with Podman: podman secret create --driver shell {name} {}\n(or next time use --register, which leaves no copy under the name)",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Registers `mapping` as Podman secret `name` with the shell driver: Podman stores it
/// through psi's driver under Podman's own ID, so no copy is left under the name. For
/// `--register` of the commands that seal one value (`creds store`, `nitrokeyhsm store`).
///
/// With the podman CLI installed, `podman secret create --driver shell NAME -`: it carries
/// the caller's own Podman (containers.conf, storage, rootless or not). Without it, as in
/// psi's image (`podman exec -i psi-secrets psi creds store NAME --register`), the same
/// request goes to the Podman API socket (`podman_socket`, which the psi-secrets quadlet
/// mounts); the host's Podman then runs its own psi.conf store command.
pub(crate) async fn register(
    settings: &Settings,
    name: &SecretId,
    mapping: &[u8],
    provider: &str,
) -> Result<()> {
    if mapping.len() > PODMAN_MAX_SECRET {
        return Err(Error::Usage(format!(
            "the sealed mapping is {} bytes and Podman accepts at most {PODMAN_MAX_SECRET}; store it without --register",
            mapping.len()
        )));
    }
    let how = if crate::process::on_path("podman") {
        let args = ["secret", "create", "--driver", "shell", name.as_str(), "-"];
        let output = crate::process::run(std::ffi::OsStr::new("podman"), args, mapping).await?;
        if !output.success {
            return Err(Error::Podman(format!(
                "podman secret create {name} failed: {}\n(is psi serve running, and psi.conf installed with psi install?)",
                output.stderr
            )));
        }
        "podman"
    } else {
        let socket = crate::podman::configured_socket(settings)?;
        let podman = crate::podman::Podman::new(socket.clone());
        // The API takes no options from containers.conf: the driver commands go with the
        // request, as `psi setup` sends them.
        let driver = crate::driver::Driver::resolve(settings, None)?;
        driver.write_token_file()?;
        let opts = crate::unitgen::driver_conf::commands(&driver.conf())
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        podman
            .create_secret(name.as_str(), "shell", &opts, mapping)
            .await
            .map_err(|err| {
                err.context(format!(
                    "register {name} through the Podman API at {} (no podman command here)",
                    socket.display()
                ))
            })?;
        "podman-api"
    };
    tracing::info!(event = "secret.register", secret_id = %name, provider, via = how, outcome = "success", "registered with Podman");
    Ok(())
}

/// Prints a report: JSON when asked for (machines), else its text.
pub fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    human: impl FnOnce(&T) -> String,
) -> Result<()> {
    let text = if json {
        let mut text = serde_json::to_string_pretty(report).context("cannot encode the report")?;
        text.push('\n');
        text
    } else {
        human(report)
    };
    write_stdout(text.as_bytes())
}

/// Writes to stdout; a reader that went away (closed pipe) is not psi's failure.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            context: "cannot write to stdout".into(),
            source: err,
        }),
        _ => Ok(()),
    }
}
