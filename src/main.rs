//! The `psi` binary: parse, set up logging, run, and report the error once.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use psi::error::Error;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `psi client` runs once per secret on every container start: dispatch it before clap
    // and logging, so it pays for nothing it does not use.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|first| first == "client") {
        let socket = std::env::var_os("PSI_SOCKET").map(Into::into);
        return ExitCode::from(psi::client::main(args, socket));
    }
    let cli = psi::cli::Cli::parse();
    if let psi::cli::Command::Client(client) = cli.command {
        return ExitCode::from(psi::client::main(client.args, cli.socket));
    }
    if let Err(err) = init_logging(&cli.log_level, cli.log_json) {
        eprintln!("psi: {err}");
        return ExitCode::from(err.exit_code());
    }
    match psi::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("psi: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Logs go to stderr (stdout carries command output): JSON lines when asked or when stderr
/// is not a terminal (journald, a pipe), human-readable otherwise.
fn init_logging(level: &str, json: bool) -> psi::error::Result<()> {
    let level = level.to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace", "off"].contains(&level.as_str()) {
        return Err(Error::Usage(format!(
            "invalid log level '{level}': use error, warn, info, debug or trace"
        )));
    }
    // psi's own events at the chosen level; dependencies stay at warn unless debugging.
    let directives = match level.as_str() {
        "info" => "warn,psi=info".to_owned(),
        _ => level.clone(),
    };
    let filter = EnvFilter::try_new(directives).map_err(|err| Error::Usage(err.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json || !std::io::stderr().is_terminal() {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_target(false).init();
    }
    Ok(())
}
