//! Configuration: unknown keys with paths and suggestions, defaults per scope, validation
//! across blocks, credential precedence, the socket token format.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use psi::config::{
    process_env, CredentialSource, Overrides, RawPolicy, Scope, ScopePaths, SealWith, Settings,
    WithKey,
};
use psi::error::Error;
use psi::secret::SecretString;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).map(OsString::from)
}

fn load_text(text: &str) -> Result<Settings, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let overrides = Overrides {
        config: Some(path),
        socket: None,
    };
    Settings::load(&overrides, &env_of(&[("HOME", "/home/u")]), 0)
}

fn config_error(text: &str) -> String {
    let err = load_text(text).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    err.to_string()
}

#[test]
fn unknown_keys_name_the_file_path_and_a_near_miss() {
    let text = "workloads:\n  myapp:\n    provider: systemd-creds\n    secrets:\n      - project: p\n        recursve: true\n";
    let msg = config_error(text);
    assert!(msg.contains("config.yaml: workloads.myapp.secrets[0].recursve: unknown key, did you mean 'recursive'?"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");

    let msg = config_error("stat_dir: /x\n");
    assert!(
        msg.ends_with("stat_dir: unknown key, did you mean 'state_dir'?"),
        "{msg}"
    );
    let msg = config_error("providers:\n  systemd-cred: {}\n");
    assert!(
        msg.contains("providers.systemd-cred: unknown key, did you mean 'systemd-creds'?"),
        "{msg}"
    );
    let msg = config_error("cache:\n  zzzzzz: 1\n");
    assert!(
        msg.contains("cache.zzzzzz: unknown key (known keys: enabled, backend, path"),
        "{msg}"
    );
    let msg = config_error(
        "providers:\n  infisical:\n    projects:\n      p: {id: x, enviroment: prod}\n",
    );
    assert!(
        msg.contains(
            "providers.infisical.projects.p.enviroment: unknown key, did you mean 'environment'?"
        ),
        "{msg}"
    );
    let msg = config_error("providers:\n  nitrokeyhsm:\n    pin_code: 1234\n");
    assert!(
        msg.contains("providers.nitrokeyhsm.pin_code: unknown key"),
        "{msg}"
    );
}

#[test]
fn wrong_types_and_values_are_explained_without_quoting_values() {
    let msg = config_error("socket_token: [hunter2hunter2]\n");
    assert!(
        msg.contains("socket_token: wrong type: found a sequence"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let msg = config_error("providers:\n  systemd-creds:\n    with_key: tpm3\n");
    assert!(msg.contains("providers.systemd-creds.with_key: unknown value; expected one of: auto, host, tpm2, host+tpm2"), "{msg}");
    let msg = config_error("providers:\n  systemd-creds:\n    tpm2_pcrs: \"\"\n");
    assert!(msg.contains("tpm2_pcrs"), "{msg}");
    let msg = config_error("cache:\n  backend: disk\n");
    assert!(
        msg.contains("cache.backend: unknown value; expected one of: tpm, hsm"),
        "{msg}"
    );
    let msg = config_error(
        "workloads:\n  a:\n    provider: systemd-creds\n    secrets:\n      - path: /x\n",
    );
    assert!(
        msg.contains("workloads.a.secrets[0]: missing required key 'project'"),
        "{msg}"
    );
    let msg =
        config_error("workloads:\n  a:\n    provider: systemd-creds\n    on_change: reboot\n");
    assert!(
        msg.contains("workloads.a.on_change: unknown value; expected one of: restart, none"),
        "{msg}"
    );
    let msg = config_error("state_dir: [unclosed\n");
    assert!(msg.contains("config.yaml"), "{msg}");
}

#[test]
fn cross_block_validation() {
    let msg = config_error("workloads:\n  myapp:\n    secrets: []\n");
    assert!(
        msg.contains("workload 'myapp' uses provider 'infisical', but it is not configured (configured: systemd-creds)"),
        "{msg}"
    );
    let msg = config_error("providers:\n  infisical: {}\nstore:\n  raw_values: seal\n");
    assert!(
        msg.contains("store.raw_values: 'seal' needs a sealing provider"),
        "{msg}"
    );
    let msg = config_error("providers:\n  infisical: {}\nstore:\n  seal_with: systemd-creds\n");
    assert!(
        msg.contains("store.seal_with: provider 'systemd-creds' is not configured"),
        "{msg}"
    );
}

#[test]
fn defaults_and_raw_value_policy() {
    let empty = load_text("").unwrap();
    assert_eq!(empty.providers.names(), ["systemd-creds"]);
    assert_eq!(empty.raw_values, RawPolicy::Seal(SealWith::SystemdCreds));
    assert_eq!(empty.state_dir, Path::new("/var/lib/psi"));
    assert_eq!(empty.socket_path, Path::new("/run/psi/psi.sock"));
    assert!(empty.socket_token.is_none());

    let infisical_only = load_text("providers:\n  infisical:\n    api_url: https://x\n").unwrap();
    assert_eq!(infisical_only.providers.names(), ["infisical"]);
    assert_eq!(infisical_only.raw_values, RawPolicy::Reject);

    let bare = load_text("providers:\n  systemd-creds:\n").unwrap();
    assert_eq!(
        bare.providers.systemd_creds.unwrap().with_key,
        WithKey::Auto
    );

    let reject = load_text("store:\n  raw_values: reject\n").unwrap();
    assert_eq!(reject.raw_values, RawPolicy::Reject);

    let pcrs =
        load_text("providers:\n  systemd-creds:\n    with_key: tpm2\n    tpm2_pcrs: [7, 11]\n")
            .unwrap();
    let creds = pcrs.providers.systemd_creds.unwrap();
    assert_eq!(
        (creds.with_key, creds.tpm2_pcrs.unwrap().to_arg()),
        (WithKey::Tpm2, "7+11".to_owned())
    );

    // The original's schema loads whole.
    let full = "scope: system\nca_cert: /etc/ca.pem\nproviders:\n  infisical:\n    api_url: https://infisical.test\n    verify_ssl: true\n    token: {ttl: 60}\n    auth: {method: universal-auth, client_id: cid, client_secret: csec}\n    projects:\n      myproject: {id: proj-uuid-123, environment: prod}\n    tls:\n      certificates:\n        web:\n          project: myproject\n          profile_id: profile-uuid\n          common_name: web.example.com\n          alt_names: [{type: dns_name, value: web}]\n          output: {cert: /t/cert.pem, key: /t/key.pem, chain: /t/chain.pem}\n          hooks: [\"systemctl reload nginx\"]\n  nitrokeyhsm:\n    pkcs11_module: /usr/lib/softhsm/libsofthsm2.so\n    slot: 0\n    key_label: podman-secrets\n    key_id: \"02\"\nworkloads:\n  myapp:\n    provider: infisical\n    unit: myapp.container\n    depends_on: [psi-infisical-setup.service]\n    secrets:\n      - {project: myproject, path: /app, recursive: true}\ncache:\n  enabled: true\n  backend: tpm\n  refresh_interval: 30m\n";
    let settings = load_text(full).unwrap();
    assert_eq!(settings.providers.names(), ["infisical", "nitrokeyhsm"]);
    assert_eq!(settings.workloads["myapp"].secrets[0].path, "/app");
}

#[test]
fn missing_config_files() {
    // Named explicitly: an error (exit 2) naming the file.
    let overrides = Overrides {
        config: Some(PathBuf::from("/nonexistent/psi.yaml")),
        socket: None,
    };
    let err = Settings::load(&overrides, &env_of(&[]), 0).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/psi.yaml: cannot read the config file"),
        "{err}"
    );
    // The scope default missing: built-in defaults (user scope under a fresh HOME).
    let home = tempfile::tempdir().unwrap();
    let env = env_of(&[
        ("HOME", home.path().to_str().unwrap()),
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
    ]);
    let settings = Settings::load(&Overrides::default(), &env, 1000).unwrap();
    assert!(!settings.config_found);
    assert_eq!(settings.scope, Scope::User);
    assert_eq!(
        settings.config_path,
        home.path().join(".config/psi/config.yaml")
    );
    assert_eq!(settings.state_dir, home.path().join(".local/share/psi"));
    assert_eq!(
        settings.socket_path,
        Path::new("/run/user/1000/psi/psi.sock")
    );
}

#[test]
fn scope_path_table() {
    let system = ScopePaths::new(Scope::System, 0, None, None).unwrap();
    assert_eq!(
        system.containers_conf_d,
        Path::new("/etc/containers/containers.conf.d")
    );
    assert_eq!(system.systemd_dir, Path::new("/etc/containers/systemd"));
    assert_eq!(system.unit_dir, Path::new("/etc/systemd/system"));
    assert_eq!(system.config_dir, Path::new("/etc/psi"));
    let user = ScopePaths::new(Scope::User, 1000, Some(Path::new("/home/u")), None).unwrap();
    assert_eq!(user.socket, Path::new("/run/user/1000/psi/psi.sock"));
    assert_eq!(
        user.containers_conf_d,
        Path::new("/home/u/.config/containers/containers.conf.d")
    );
    assert_eq!(
        user.systemd_dir,
        Path::new("/home/u/.config/containers/systemd")
    );
    assert_eq!(user.unit_dir, Path::new("/home/u/.config/systemd/user"));
    assert!(ScopePaths::new(Scope::User, 1000, None, None).is_err());
}

#[test]
fn socket_path_precedence_flag_over_config_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "socket_path: /from/config.sock\n").unwrap();
    let env = env_of(&[]);
    let from_config = Settings::load(
        &Overrides {
            config: Some(path.clone()),
            socket: None,
        },
        &env,
        0,
    )
    .unwrap();
    assert_eq!(from_config.socket_path, Path::new("/from/config.sock"));
    let from_flag = Settings::load(
        &Overrides {
            config: Some(path),
            socket: Some("/from/flag.sock".into()),
        },
        &env,
        0,
    )
    .unwrap();
    assert_eq!(from_flag.socket_path, Path::new("/from/flag.sock"));
}

#[test]
fn credential_precedence_creds_dir_then_config_then_env() {
    let creds = tempfile::tempdir().unwrap();
    let dir = creds.path().to_str().unwrap();
    let config = SecretString::new("from-config".into());
    let resolve = |env: &dyn Fn(&str) -> Option<OsString>, config: Option<&SecretString>| {
        psi::config::resolve_credential(env, "psi-socket-token", config, "PSI_SOCKET_TOKEN")
            .unwrap()
            .map(|(v, s)| (v.expose().to_owned(), s))
    };
    let env_only = env_of(&[("PSI_SOCKET_TOKEN", "from-env-var")]);
    assert_eq!(
        resolve(&env_only, None),
        Some(("from-env-var".into(), CredentialSource::Environment))
    );
    assert_eq!(
        resolve(&env_only, Some(&config)),
        Some(("from-config".into(), CredentialSource::ConfigFile))
    );
    let with_dir = env_of(&[
        ("PSI_SOCKET_TOKEN", "from-env-var"),
        ("CREDENTIALS_DIRECTORY", dir),
    ]);
    // The directory is set but holds no such file: fall through.
    assert_eq!(
        resolve(&with_dir, Some(&config)),
        Some(("from-config".into(), CredentialSource::ConfigFile))
    );
    std::fs::write(creds.path().join("psi-socket-token"), "from-credential\n").unwrap();
    assert_eq!(
        resolve(&with_dir, Some(&config)),
        Some((
            "from-credential".into(),
            CredentialSource::CredentialsDirectory
        ))
    );
    assert_eq!(resolve(&env_of(&[]), None), None);
}

#[test]
fn socket_token_format_is_checked_whole() {
    use psi::config::validate_socket_token as check;
    assert!(check("abcdefgh").is_ok());
    assert!(check("AZaz09._~+/=-").is_ok());
    for bad in [
        "short",
        "has space1",
        "quote'quote",
        "dollar$dollar",
        "abcdefgh\n",
        "ünïcödé-token",
        "",
    ] {
        assert!(check(bad).is_err(), "{bad:?}");
    }
    let msg = config_error("socket_token: \"bad token with spaces\"\n");
    assert!(msg.contains("socket_token: invalid socket token"), "{msg}");
    assert!(!msg.contains("bad token"), "{msg}");
}

#[test]
fn process_env_reads_the_real_environment() {
    assert!(process_env("PATH").is_some());
}

#[test]
fn infisical_auth_is_validated_per_project_with_key_paths() {
    let msg = config_error(
        "providers:\n  infisical:\n    projects:\n      web:\n        id: x\n        auth: {method: universal-auth, client_id: c}\n",
    );
    assert!(
        msg.ends_with("providers.infisical.projects.web.auth: universal-auth requires client_id and client_secret"),
        "{msg}"
    );
    let msg = config_error("providers:\n  infisical:\n    auth: {method: aws-iam}\n");
    assert!(
        msg.ends_with("providers.infisical.auth: aws-iam requires identity_id"),
        "{msg}"
    );
    let msg = config_error(
        "providers:\n  infisical:\n    projects:\n      b: {id: x}\n      a: {id: y}\n      c: {id: z, auth: {method: gcp, identity_id: i}}\n",
    );
    assert!(
        msg.ends_with("no global auth and no per-project auth for projects: a, b; set providers.infisical.auth or add auth to each project"),
        "{msg}"
    );
    let msg = config_error(
        "providers:\n  infisical:\n    auth: {method: gcp, identity_id: i, region: eu-west-1}\n",
    );
    assert!(
        msg.contains("providers.infisical.auth.region: applies to aws-iam only"),
        "{msg}"
    );
    let msg = config_error(
        "providers:\n  infisical:\n    timeout: soon\n    auth: {method: azure, identity_id: i}\n",
    );
    assert!(
        msg.contains("providers.infisical.timeout: 'soon' is not a duration"),
        "{msg}"
    );
    let ok = load_text(
        "providers:\n  infisical:\n    auth: {method: aws-iam, identity_id: i, region: eu-west-1}\n    projects:\n      web: {id: x}\n      own: {id: y, auth: {method: universal-auth, client_id: c, client_secret: s}}\n",
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn workloads_are_validated_with_key_paths() {
    let base = "providers:\n  infisical:\n    auth: {method: universal-auth, client_id: c, client_secret: s}\n    projects:\n      web: {id: x}\nworkloads:\n";
    for (workload, expected) in [
        (
            "  app:\n    secrets:\n      - {project: api}\n",
            "workloads.app.secrets[0].project: 'api' is not a project under providers.infisical.projects (configured: web)",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, env: {1BAD: KEY}}\n",
            "workloads.app.secrets[0].env.1BAD: '1BAD' is not a valid environment variable name",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, type: mount, env: {A: B}}\n",
            "workloads.app.secrets[0]: 'type: mount' mounts every key of the source as a file, so it cannot have an 'env' map",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, target: /x}\n",
            "workloads.app.secrets[0].target: only applies to file secrets",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, files: {K: {mode: '0999'}}}\n",
            "workloads.app.secrets[0].files.K.mode: '0999' is not a file mode",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, files: {K: {target: 'a,b'}}}\n",
            "workloads.app.secrets[0].files.K.target: 'a,b' cannot be a secret file path",
        ),
        (
            "  app:\n    depends_on: ['a.service b.service']\n",
            "workloads.app.depends_on[0]: 'a.service b.service' is not a unit name",
        ),
        (
            "  app:\n    secrets:\n      - {project: web, path: app}\n",
            "workloads.app.secrets[0].path: 'app' must start with '/'",
        ),
        (
            "  'bad name':\n    secrets: []\n",
            "workloads.bad name: 'bad name' is not a usable workload name",
        ),
    ] {
        let msg = config_error(&format!("{base}{workload}"));
        assert!(msg.contains(expected), "{workload}: {msg}");
    }
    // Template workloads and file secrets are fine.
    load_text(&format!(
        "{base}  worker@:\n    secrets:\n      - {{project: web, type: mount, target: /etc/x, mode: '0400', uid: 1}}\n"
    ))
    .unwrap();
}

#[test]
fn tls_certificates_are_validated_with_key_paths() {
    let base = "providers:\n  infisical:\n    auth: {method: universal-auth, client_id: c, client_secret: s}\n    projects:\n      web: {id: x}\n    tls:\n      certificates:\n        api:\n";
    let output = "          output: {cert: /c, key: /k, chain: /ch}\n";
    for (cert, expected) in [
        (
            "          project: web\n          common_name: a\n",
            "providers.infisical.tls.certificates.api: set profile_id (a certificate profile) or ca_id",
        ),
        (
            "          project: nope\n          ca_id: c\n          common_name: a\n",
            "providers.infisical.tls.certificates.api.project: 'nope' is not a project",
        ),
        (
            "          project: web\n          ca_id: c\n          common_name: a\n          hook_timeout: soon\n",
            "providers.infisical.tls.certificates.api.hook_timeout: 'soon' is not a duration",
        ),
    ] {
        let msg = config_error(&format!("{base}{cert}{output}"));
        assert!(msg.contains(expected), "{cert}: {msg}");
    }
    // A CA alone (older Infisical) needs no profile.
    load_text(&format!(
        "{base}          project: web\n          ca_id: c\n          common_name: a\n          hook_timeout: 5s\n{output}"
    ))
    .unwrap();
}

/// Every output and hook setting of a certificate is checked when the file is loaded, so a
/// bad one fails `psi check` and the renewal timer before a certificate is issued.
#[test]
fn tls_outputs_and_hooks_are_validated_at_load() {
    let base = "providers:\n  infisical:\n    auth: {method: universal-auth, client_id: c, client_secret: s}\n    projects:\n      web: {id: x}\n    tls:\n      certificates:\n        api:\n          project: web\n          ca_id: c\n          common_name: a\n";
    let at = "providers.infisical.tls.certificates.api";
    for (cert, expected) in [
        (
            "          output: {cert: /c, key: /k, chain: /ch, mode: 'rw-r--r--'}\n",
            format!("{at}.output.mode: 'rw-r--r--' is not a file mode; use octal digits, e.g. 0640 (line 12, column"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch, mode: '01777'}\n",
            format!("{at}.output.mode: '01777' is not a file mode"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch, mode: ''}\n",
            format!("{at}.output.mode: '' is not a file mode"),
        ),
        (
            "          output: {cert: c.pem, key: /k, chain: /ch}\n",
            format!("{at}.output.cert: 'c.pem' is not an absolute path"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch, fullchain: full.pem}\n",
            format!("{at}.output.fullchain: 'full.pem' is not an absolute path"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch, ca: /etc/pki/}\n",
            format!("{at}.output.ca: '/etc/pki/' names a directory, not a file"),
        ),
        (
            "          output: {cert: /c, key: /c, chain: /ch}\n",
            format!("{at}.output.key: '/c' is also {at}.output.cert"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch}\n          renew_before: a month\n",
            format!("{at}.renew_before: 'a month' is not a duration"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch}\n          hooks: ['systemctl reload nginx', '  ']\n",
            format!("{at}.hooks[1]: the hook is empty; write a command line (line 13, column"),
        ),
        (
            "          output: {cert: /c, key: /k, chain: /ch}\n          hooks: [\"kill -HUP 'nginx\"]\n",
            format!("{at}.hooks[0]: the hook is not a command line: unbalanced quotes or a trailing backslash (line 13, column"),
        ),
    ] {
        let msg = config_error(&format!("{base}{cert}"));
        assert!(msg.contains(&expected), "{cert}: {msg}");
    }
    // Two certificates cannot write one file either.
    let two = format!(
        "{base}          output: {{cert: /a/cert.pem, key: /a/key.pem, chain: /a/chain.pem}}\n        web:\n          project: web\n          ca_id: c\n          common_name: b\n          output: {{cert: /b/cert.pem, key: /b/key.pem, chain: /a/chain.pem}}\n"
    );
    let msg = config_error(&two);
    assert!(
        msg.contains("providers.infisical.tls.certificates.web.output.chain: '/a/chain.pem' is also providers.infisical.tls.certificates.api.output.chain"),
        "{msg}"
    );
    // Modes unquoted, quoted and with `0o`; a fullchain output; hooks with quoted words.
    for mode in ["0640", "'0644'", "0o600", "440"] {
        load_text(&format!(
            "{base}          output: {{cert: /c, key: /k, chain: /ch, fullchain: /f, ca: /ca, mode: {mode}}}\n          hooks: [\"touch '/tmp/a b'\"]\n"
        ))
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}

#[test]
fn cache_watch_interval_is_a_positive_duration() {
    let settings = load_text("cache:\n  watch_interval: 250ms\n").unwrap();
    assert_eq!(
        settings.cache.watch_interval,
        std::time::Duration::from_millis(250)
    );
    let settings = load_text("cache: {}\n").unwrap();
    assert_eq!(
        settings.cache.watch_interval,
        std::time::Duration::from_secs(2)
    );
    let msg = config_error("cache:\n  watch_interval: 0s\n");
    assert!(
        msg.ends_with("cache.watch_interval: must be more than 0 (default: 2s)"),
        "{msg}"
    );
    let msg = config_error("cache:\n  watch_interval: often\n");
    assert!(
        msg.contains("cache.watch_interval: 'often' is not a duration"),
        "{msg}"
    );
}

/// Keys that were checked only where they were used (the cache timer when units are
/// generated, the driver's psi path when psi.conf or a secret is written, a file secret's
/// mode when Podman read it) fail at load, with their key path.
#[test]
fn keys_read_late_are_validated_at_load() {
    let workload = "providers:\n  infisical:\n    auth: {method: universal-auth, client_id: c, client_secret: s}\n    projects:\n      web: {id: x}\nworkloads:\n  app:\n    secrets:\n";
    for (text, expected) in [
        (
            "cache:\n  refresh_interval: hourly\n".to_owned(),
            "cache.refresh_interval: 'hourly' is not a duration",
        ),
        (
            "cache:\n  refresh_randomized_delay: 5 minutes\n".to_owned(),
            "cache.refresh_randomized_delay: '5 minutes' is not a duration",
        ),
        (
            "driver:\n  psi_path: bin/psi\n".to_owned(),
            "driver.psi_path: 'bin/psi' is not an absolute path",
        ),
        // Podman reads a mode as octal digits without a sign.
        (
            format!("{workload}      - {{project: web, files: {{K: {{mode: '+640'}}}}}}\n"),
            "workloads.app.secrets[0].files.K.mode: '+640' is not a file mode",
        ),
        (
            format!("{workload}      - {{project: web, type: mount, mode: '+600'}}\n"),
            "workloads.app.secrets[0].mode: '+600' is not a file mode",
        ),
    ] {
        let msg = config_error(&text);
        assert!(msg.contains(expected), "{text}: {msg}");
    }
}

/// What consumers read is resolved at load: paths with their defaults, durations parsed,
/// timer text kept for systemd, modes in the form Podman reads.
#[test]
fn settings_hold_resolved_typed_values() {
    let settings = load_text(concat!(
        "cache:\n  refresh_interval: ' 2h '\n",
        "providers:\n  infisical:\n    timeout: 10s\n    auth: {method: azure, identity_id: i}\n    projects:\n      web: {id: x}\n",
        "workloads:\n  app:\n    secrets:\n      - {project: web, files: {K: {mode: '0o400'}}}\n",
    ))
    .unwrap();
    assert_eq!(settings.cache.refresh_interval.as_str(), "2h");
    assert_eq!(settings.cache.refresh_randomized_delay.as_str(), "5m");
    assert_eq!(settings.cache.path, Path::new("/var/lib/psi/cache.enc"));
    assert_eq!(
        settings.cache.key_path,
        settings.config_path.with_file_name("cache.key")
    );
    assert_eq!(
        settings.providers.infisical.as_ref().unwrap().timeout,
        Some(std::time::Duration::from_secs(10))
    );
    let mode = settings.workloads["app"].secrets[0].files["K"]
        .mode
        .unwrap();
    assert_eq!(mode.to_string(), "0400");
    // Restarting a workload is opt-in.
    assert_eq!(
        settings.workloads["app"].on_change,
        psi::config::OnChange::None
    );
    assert_eq!(
        settings.podman_socket.path().unwrap(),
        Path::new("/run/podman/podman.sock")
    );
    assert_eq!(settings.explicit.podman_socket, None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "cache: {path: /c/cache.enc}\n").unwrap();
    let overrides = Overrides {
        config: Some(path),
        socket: None,
    };
    // The environment that `Settings::load` is given decides the default Podman socket; a
    // user without XDG_RUNTIME_DIR loads fine and learns what to set when Podman is needed.
    let env = env_of(&[("HOME", "/home/u"), ("CONTAINER_HOST", "unix:///p.sock")]);
    let settings = Settings::load(&overrides, &env, 1000).unwrap();
    assert_eq!(settings.podman_socket.path().unwrap(), Path::new("/p.sock"));
    assert_eq!(settings.cache.path, Path::new("/c/cache.enc"));
    let settings = Settings::load(&overrides, &env_of(&[("HOME", "/home/u")]), 1000).unwrap();
    let err = settings.podman_socket.path().unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("XDG_RUNTIME_DIR is not set"),
        "{err}"
    );
}

/// The Infisical URL and the HSM key ID are checked when the file is loaded, with their key
/// path, not when the provider first opens.
#[test]
fn api_url_and_key_id_are_checked_at_load() {
    let msg = config_error(
        "providers:\n  infisical:\n    api_url: ftp://infisical.example\n    auth: {method: universal-auth, client_id: c, client_secret: s}\n",
    );
    assert!(
        msg.contains(
            "providers.infisical.api_url: 'ftp://infisical.example' is not an http(s) URL"
        ),
        "{msg}"
    );
    let msg = config_error("providers:\n  nitrokeyhsm:\n    key_id: \"2\"\n");
    assert!(
        msg.contains("providers.nitrokeyhsm.key_id: '2' is not hex (for example \"02\")"),
        "{msg}"
    );
}
