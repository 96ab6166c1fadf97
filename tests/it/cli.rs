//! The binary's contract: errors once on stderr with their context, exit codes 0/1/2,
//! stdout only for command output, logs as JSON lines when stderr is not a terminal.

use crate::support::Sandbox;

#[test]
fn usage_errors_exit_2_on_stderr() {
    let out = Sandbox::new().psi().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn config_errors_exit_2_once_with_the_file_and_key() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("bad.yaml");
    std::fs::write(&path, "providers:\n  systemd-creds:\n    with_kee: host\n").unwrap();
    let out = sandbox
        .psi()
        .args(["-c", path.to_str().unwrap(), "install", "--stdout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = format!(
        "psi: error: {}: providers.systemd-creds.with_kee: unknown key, did you mean 'with_key'? (line 3, column 5)\n",
        path.display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn psi_config_env_names_the_file() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .psi()
        .env("PSI_CONFIG", "/nonexistent/c.yaml")
        .args(["install", "--stdout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/c.yaml: cannot read the config file"));
}

#[test]
fn invalid_log_level_is_a_usage_error() {
    let out = Sandbox::new()
        .psi()
        .args(["--log-level", "loud", "install", "--stdout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid log level 'loud'"));
}

#[test]
fn serve_refuses_a_socket_in_use_with_exit_1() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let _listener = std::os::unix::net::UnixListener::bind(sandbox.socket()).unwrap();
    let out = sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use: another psi serve is answering on it"),
        "{stderr}"
    );
    // Logs are JSON lines (stderr is a pipe here), one object per line.
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

#[test]
fn log_json_takes_the_usual_boolean_spellings() {
    for value in ["1", "0", "yes", "no", "true", "false"] {
        let out = Sandbox::new()
            .psi()
            .env("PSI_LOG_JSON", value)
            .args(["install", "--stdout"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PSI_LOG_JSON={value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_state_dir_writable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let state = sandbox.state_dir();
    std::fs::create_dir(&state).unwrap();
    let list = || {
        let out = sandbox
            .psi()
            .arg("-c")
            .arg(&config)
            .args(["secret", "list"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        let stderr = list();
        assert!(
            stderr.contains("the state directory is writable by group or others")
                && stderr.contains(&format!("{mode:04o}"))
                && stderr.contains(&state.display().to_string()),
            "{mode:o}: {stderr}"
        );
    }
    for mode in [0o700, 0o755] {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        assert!(!list().contains("writable"), "{mode:o}");
    }
}
