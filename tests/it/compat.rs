//! Compatibility with the original psi: the driver configuration it wrote, its mapping files
//! (Appendix A vectors of reference/original-psi.md), its one-shot driver commands.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use psi::secret::Mapping;
use psi::unitgen::driver_conf::{render, Client, DriverConf};

use crate::support::{run_with_stdin, Sandbox};

/// The original's `psi install --stdout`, system scope, without a token.
const ORIGINAL: &str = r#"[secrets]
driver = "shell"

[secrets.opts]
store = "curl -sf --unix-socket /run/psi/psi.sock -X POST -d @- http://localhost/store/$SECRET_ID"
lookup = "curl -sf --unix-socket /run/psi/psi.sock http://localhost/lookup/$SECRET_ID"
delete = "curl -sf --unix-socket /run/psi/psi.sock -X DELETE http://localhost/delete/$SECRET_ID"
list = "curl -sf --unix-socket /run/psi/psi.sock http://localhost/list"
"#;

/// The one deliberate change: the store line carries the body binary-safe and shows psi's
/// refusal message.
fn with_binary_safe_store(original: &str) -> String {
    original
        .replace("store = \"curl -sf ", "store = \"curl -s --fail-with-body ")
        .replace("-d @-", "--data-binary @-")
}

#[test]
fn psi_conf_is_the_originals_but_for_the_store_line() {
    let ours = render(&DriverConf {
        socket: Path::new("/run/psi/psi.sock"),
        client: Client::Curl { token: None },
    });
    assert_eq!(ours, with_binary_safe_store(ORIGINAL));
    // Every other line is byte-identical.
    let differing: Vec<_> = ours
        .lines()
        .zip(ORIGINAL.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(differing.len(), 1);
    assert!(differing[0].0.starts_with("store = "));

    let with_token = render(&DriverConf {
        socket: Path::new("/run/user/1000/psi/psi.sock"),
        client: Client::Curl {
            token: Some("T0ken-abc"),
        },
    });
    let expected = with_binary_safe_store(ORIGINAL)
        .replace("/run/psi/psi.sock", "/run/user/1000/psi/psi.sock")
        .replace(
            "--unix-socket",
            "-H 'Authorization: Bearer T0ken-abc' --unix-socket",
        );
    assert_eq!(with_token, expected);
}

#[test]
fn unusual_socket_paths_stay_valid_shell_and_toml() {
    let text = render(&DriverConf {
        socket: Path::new("/run/my psi/\"q\".sock"),
        client: Client::Curl { token: None },
    });
    let lookup = text.lines().find(|l| l.starts_with("lookup = ")).unwrap();
    assert_eq!(
        lookup,
        r#"lookup = "curl -sf --unix-socket '/run/my psi/\"q\".sock' http://localhost/lookup/$SECRET_ID""#
    );
}

#[test]
fn install_writes_atomically_with_the_right_mode() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let out_path = sandbox.path().join("conf.d/psi.conf");
    let run = |token: Option<&str>| {
        let mut cmd = sandbox.psi();
        cmd.args([
            "-c",
            config.to_str().unwrap(),
            "install",
            "--client",
            "curl",
            "--output",
            out_path.to_str().unwrap(),
        ]);
        if let Some(token) = token {
            cmd.env("PSI_SOCKET_TOKEN", token);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(run(None), 0o644);
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(text.contains(&format!(
        "--unix-socket {} http://localhost/lookup/$SECRET_ID",
        sandbox.socket().display()
    )));
    assert_eq!(run(Some("secret-token-1")), 0o600);
    assert!(std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("-H 'Authorization: Bearer secret-token-1'"));
    // The state dir is created, and no temp file is left next to psi.conf.
    assert!(sandbox.state_dir().is_dir());
    assert_eq!(
        std::fs::read_dir(out_path.parent().unwrap())
            .unwrap()
            .count(),
        1
    );

    // --stdout prints the same text and writes nothing.
    let out = sandbox
        .psi()
        .args([
            "-c",
            config.to_str().unwrap(),
            "install",
            "--client",
            "curl",
            "--stdout",
        ])
        .output()
        .unwrap();
    let elsewhere = sandbox.path().join("conf.d/psi.conf");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        render(&DriverConf {
            socket: &sandbox.socket(),
            client: Client::Curl { token: None },
        })
    );
    assert!(elsewhere.exists());

    // A bad token is a configuration error, and nothing is written.
    let fresh = sandbox.path().join("other/psi.conf");
    let out = sandbox
        .psi()
        .args([
            "-c",
            config.to_str().unwrap(),
            "install",
            "--output",
            fresh.to_str().unwrap(),
        ])
        .env("PSI_SOCKET_TOKEN", "bad token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PSI_SOCKET_TOKEN: invalid socket token"));
    assert!(!fresh.exists());
}

#[test]
fn mapping_files_match_the_originals_vectors() {
    let infisical = Mapping::new(
        "infisical",
        &[
            ("project", "myproject"),
            ("path", "/app"),
            ("key", "DB_HOST"),
        ],
    );
    assert_eq!(
        infisical.to_bytes(),
        br#"{"provider": "infisical", "project": "myproject", "path": "/app", "key": "DB_HOST"}"#
    );
    let canonical = psi::pyjson::dumps(
        &serde_json::from_slice(&infisical.to_bytes()).unwrap(),
        psi::pyjson::Style::CANONICAL,
    );
    assert_eq!(
        canonical,
        r#"{"key":"DB_HOST","path":"/app","project":"myproject","provider":"infisical"}"#
    );
    // A file the original wrote (any spacing, trailing newline) parses and keeps its order.
    let parsed = Mapping::parse(b"{\"provider\": \"nitrokeyhsm\", \"blob\": \"AAEC\"}\n").unwrap();
    assert_eq!(parsed.provider(), "nitrokeyhsm");
    assert_eq!(
        parsed.to_bytes(),
        br#"{"provider": "nitrokeyhsm", "blob": "AAEC"}"#
    );
}

#[test]
fn one_shot_driver_commands_behave_like_the_originals() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let psi = |args: &[&str], id: Option<&str>| {
        let mut cmd = sandbox.psi();
        cmd.args(["-c", config.to_str().unwrap(), "secret"])
            .args(args);
        if let Some(id) = id {
            cmd.env("SECRET_ID", id);
        }
        cmd
    };
    let mapping = br#"{"provider": "infisical", "project": "p", "path": "/", "key": "K"}"#;
    let out = run_with_stdin(
        &mut psi(&["store"], Some("0123456789abcdef012345678")),
        mapping,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = sandbox.state_dir().join("0123456789abcdef012345678");
    assert_eq!(std::fs::read(&stored).unwrap(), mapping);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let out = psi(&["list"], None).output().unwrap();
    assert_eq!(out.stdout, b"0123456789abcdef012345678\n");

    let out = psi(&["lookup"], None).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SECRET_ID environment variable not set"));
    let out = psi(&["lookup"], Some("../etc")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid secret ID"));
    let out = psi(&["lookup"], Some("absent")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mapping for secret: absent"));
    assert!(out.stdout.is_empty());

    let out = psi(&["delete"], Some("0123456789abcdef012345678"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stored.exists());
    assert!(psi(&["delete"], Some("0123456789abcdef012345678"))
        .output()
        .unwrap()
        .status
        .success());
}
