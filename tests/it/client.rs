//! `psi-client`, `psi client` and `psi install --client`: the driver commands without curl.
//! The rendered psi.conf for each client, the client against a real `psi serve` (exact
//! bytes, statuses, the token file) run once as `psi-client` and once as `psi client` (one
//! source, so one set of assertions), and real Podman running containers through it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use psi::unitgen::driver_conf::{render, Client, DriverConf};

use crate::support::podman::PodmanEnv;
use crate::support::{require, run_with_stdin, Sandbox, ServeProcess};

/// The small client binary, built beside psi.
fn psi_client_bin() -> &'static str {
    env!("CARGO_BIN_EXE_psi-client")
}

const CURL: &str = r#"[secrets]
driver = "shell"

[secrets.opts]
store = "curl -s --fail-with-body --unix-socket /run/psi/psi.sock -X POST --data-binary @- http://localhost/store/$SECRET_ID"
lookup = "curl -sf --unix-socket /run/psi/psi.sock http://localhost/lookup/$SECRET_ID"
delete = "curl -sf --unix-socket /run/psi/psi.sock -X DELETE http://localhost/delete/$SECRET_ID"
list = "curl -sf --unix-socket /run/psi/psi.sock http://localhost/list"
"#;

const PSI: &str = r#"[secrets]
driver = "shell"

[secrets.opts]
store = "/usr/local/bin/psi client store --socket /run/psi/psi.sock"
lookup = "/usr/local/bin/psi client lookup --socket /run/psi/psi.sock"
delete = "/usr/local/bin/psi client delete --socket /run/psi/psi.sock"
list = "/usr/local/bin/psi client list --socket /run/psi/psi.sock"
"#;

const PSI_CLIENT: &str = r#"[secrets]
driver = "shell"

[secrets.opts]
store = "/usr/local/bin/psi-client store --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
lookup = "/usr/local/bin/psi-client lookup --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
delete = "/usr/local/bin/psi-client delete --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
list = "/usr/local/bin/psi-client list --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
"#;

const PSI_WITH_TOKEN_FILE: &str = r#"[secrets]
driver = "shell"

[secrets.opts]
store = "'/opt/my psi/psi' client store --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
lookup = "'/opt/my psi/psi' client lookup --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
delete = "'/opt/my psi/psi' client delete --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
list = "'/opt/my psi/psi' client list --socket /run/psi/psi.sock --token-file /var/lib/psi/.socket-token"
"#;

#[test]
fn psi_conf_for_each_client() {
    let socket = Path::new("/run/psi/psi.sock");
    let curl = DriverConf {
        socket,
        client: Client::Curl { token: None },
    };
    assert_eq!(render(&curl), CURL);
    assert_eq!(curl.mode(), 0o644);

    let psi = DriverConf {
        socket,
        client: Client::Psi {
            binary: Path::new("/usr/local/bin/psi"),
            token_file: None,
        },
    };
    assert_eq!(render(&psi), PSI);
    let with_file = DriverConf {
        socket,
        client: Client::Psi {
            binary: Path::new("/opt/my psi/psi"),
            token_file: Some(Path::new("/var/lib/psi/.socket-token")),
        },
    };
    assert_eq!(render(&with_file), PSI_WITH_TOKEN_FILE);
    // The token is in the file, not in psi.conf.
    assert_eq!(with_file.mode(), 0o644);
    let lean = DriverConf {
        socket,
        client: Client::Lean {
            binary: Path::new("/usr/local/bin/psi-client"),
            token_file: Some(Path::new("/var/lib/psi/.socket-token")),
        },
    };
    assert_eq!(render(&lean), PSI_CLIENT);
    assert_eq!(lean.mode(), 0o644);
}

#[test]
fn install_picks_the_client_and_writes_the_token_file() {
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let install = |extra: &[&str], token: Option<&str>| {
        let mut cmd = sandbox.psi();
        cmd.args(["-c", config.to_str().unwrap(), "install", "--stdout"])
            .args(extra);
        if let Some(token) = token {
            cmd.env("PSI_SOCKET_TOKEN", token);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let socket = sandbox.socket();
    // psi-client is beside psi (cargo builds both into one directory): install names it.
    let psi_conf = |token_file: Option<&Path>| {
        render(&DriverConf {
            socket: &socket,
            client: Client::Lean {
                binary: Path::new(psi_client_bin()),
                token_file,
            },
        })
    };
    let curl_conf = render(&DriverConf {
        socket: &socket,
        client: Client::Curl { token: None },
    });

    assert_eq!(install(&["--client", "psi"], None), psi_conf(None));
    assert_eq!(install(&["--client", "curl"], None), curl_conf);
    // The default: psi by its own path, except in a container.
    let in_container = ["/run/.containerenv", "/.dockerenv"]
        .iter()
        .any(|m| Path::new(m).exists());
    let default = install(&[], None);
    assert_eq!(default == curl_conf, in_container);
    assert_eq!(default == psi_conf(None), !in_container);

    let token_file = sandbox.state_dir().join(".socket-token");
    assert_eq!(
        install(&["--client", "psi"], Some("secret-token-1")),
        psi_conf(Some(&token_file))
    );
    assert_eq!(std::fs::read(&token_file).unwrap(), b"secret-token-1");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The token file is not a secret to list.
    assert!(!sandbox
        .psi()
        .args(["-c", config.to_str().unwrap(), "secret", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("socket-token"))
        .unwrap());
}

/// psi-client is named only where it is: beside the psi binary the commands name
/// (`driver.psi_path` here). Without it, `psi client`, with a warning saying what to install.
#[test]
fn install_names_psi_client_beside_psi_or_falls_back_to_psi_client_with_a_warning() {
    let sandbox = Sandbox::new();
    let bin = sandbox.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let psi = bin.join("psi");
    std::fs::write(&psi, "").unwrap();
    let config = sandbox.config(&format!("driver:\n  psi_path: {}\n", psi.display()));
    let install = || {
        let out = sandbox
            .psi()
            .args(["-c", config.to_str().unwrap(), "install", "--stdout"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (String::from_utf8(out.stdout.clone()).unwrap(), stderr(&out))
    };
    let socket = sandbox.socket();
    let (conf, warning) = install();
    let fallback = Client::Psi {
        binary: &psi,
        token_file: None,
    };
    assert_eq!(
        conf,
        render(&DriverConf {
            socket: &socket,
            client: fallback
        })
    );
    assert!(warning.contains("no psi-client beside psi"), "{warning}");

    let lean = bin.join("psi-client");
    std::fs::write(&lean, "").unwrap();
    let (conf, warning) = install();
    let client = Client::Lean {
        binary: &lean,
        token_file: None,
    };
    assert_eq!(
        conf,
        render(&DriverConf {
            socket: &socket,
            client
        })
    );
    assert!(!warning.contains("psi-client"), "{warning}");
}

/// A `psi serve` on a sandbox, with `extra` configuration and `token` in its environment.
struct Served {
    sandbox: Sandbox,
    config: std::path::PathBuf,
    _serve: ServeProcess,
}

fn serve(extra: &str, token: Option<&str>) -> Option<Served> {
    if !require("systemd-creds") {
        return None;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config(extra);
    let mut cmd = sandbox.psi();
    cmd.args(["-c", config.to_str().unwrap(), "serve"]);
    if let Some(token) = token {
        cmd.env("PSI_SOCKET_TOKEN", token);
    }
    let serve = ServeProcess::start(cmd, &sandbox.socket(), sandbox.path().join("serve.log"));
    Some(Served {
        sandbox,
        config,
        _serve: serve,
    })
}

/// The two ways to run the client, one source: every test against serve runs with both.
#[derive(Debug, Clone, Copy)]
enum Program {
    /// `psi-client OP`.
    PsiClient,
    /// `psi client OP`.
    Psi,
}

const PROGRAMS: [Program; 2] = [Program::PsiClient, Program::Psi];

impl Served {
    /// `psi-client OP --socket S [extra...]` or `psi client OP ...` for `id`, as Podman's
    /// driver runs it.
    fn client(&self, program: Program, op: &str, id: Option<&str>, extra: &[&str]) -> Command {
        let mut cmd = match program {
            Program::PsiClient => self.sandbox.command(psi_client_bin()),
            Program::Psi => {
                let mut cmd = self.sandbox.psi();
                cmd.arg("client");
                cmd
            }
        };
        cmd.args([op, "--socket", self.sandbox.socket().to_str().unwrap()])
            .args(extra);
        if let Some(id) = id {
            cmd.env("SECRET_ID", id);
        }
        cmd
    }

    fn token_file(&self, token: &str) -> String {
        let path = self.sandbox.path().join("token");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn client_against_serve_store_lookup_list_delete() {
    let Some(served) = serve("", None) else {
        return;
    };
    for program in PROGRAMS {
        let id = "0123456789abcdef012345678";
        // NUL, CR, LF and a trailing newline: the bytes must come back exactly.
        let value = b"line one\r\nline two\n\0tail\n";
        let out = run_with_stdin(&mut served.client(program, "store", Some(id), &[]), value);
        assert!(out.status.success(), "{program:?} store: {}", stderr(&out));
        assert_eq!(out.stdout, b"", "a store answers with no body");

        let out = served
            .client(program, "lookup", Some(id), &[])
            .output()
            .unwrap();
        assert!(out.status.success(), "{program:?} lookup: {}", stderr(&out));
        assert_eq!(out.stdout, value);

        let out = served.client(program, "list", None, &[]).output().unwrap();
        assert!(out.status.success(), "{program:?} list: {}", stderr(&out));
        assert_eq!(out.stdout, id.as_bytes());

        let out = served
            .client(program, "delete", Some(id), &[])
            .output()
            .unwrap();
        assert!(out.status.success(), "{program:?} delete: {}", stderr(&out));
        assert!(!served.sandbox.state_dir().join(id).exists());

        // Gone: a 404 is a failure with psi's reason, and nothing on stdout.
        let out = served
            .client(program, "lookup", Some(id), &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));

        // An unsafe ID is percent-encoded and refused by psi serve, not by the client.
        let out = served
            .client(program, "lookup", Some("../x"), &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("HTTP 400"), "{}", stderr(&out));

        // Usage errors exit 2: no SECRET_ID.
        let out = served
            .client(program, "lookup", None, &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("SECRET_ID is not set"));

        // --help: the usage, naming the program as it was run.
        let out = served
            .client(program, "lookup", None, &["--help"])
            .output()
            .unwrap();
        let name = match program {
            Program::PsiClient => "psi-client",
            Program::Psi => "psi client",
        };
        let usage = format!("usage: {name} store|lookup|delete|list --socket PATH");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&usage));
        assert_eq!(out.status.code(), Some(0));
    }

    // `psi client` is also reachable after global options, through clap.
    let out = served
        .sandbox
        .psi()
        .args(["-c", served.config.to_str().unwrap(), "--socket"])
        .arg(served.sandbox.socket())
        .args(["client", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn client_reads_the_token_from_its_file() {
    let Some(served) = serve("", Some("right-token-1")) else {
        return;
    };
    for program in PROGRAMS {
        let id = "abcdefabcdefabcdefabcdef0";
        let right = served.token_file("right-token-1");
        let out = run_with_stdin(
            &mut served.client(program, "store", Some(id), &["--token-file", &right]),
            b"v",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = served
            .client(program, "lookup", Some(id), &["--token-file", &right])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, b"v");

        let out = served
            .client(program, "lookup", Some(id), &[])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("HTTP 401: invalid or missing token"),
            "{}",
            stderr(&out)
        );
        let wrong = served.token_file("wrong-token-2");
        let out = served
            .client(program, "list", None, &["--token-file", &wrong])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        // A token that could inject a header is refused before connecting.
        let bad = served.token_file("token-1\r\nX-Other: 1");
        let out = served
            .client(program, "list", None, &["--token-file", &bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("invalid socket token"));
    }
}

#[test]
fn client_reports_refusals_and_an_absent_server() {
    let Some(served) = serve("store:\n  raw_values: reject\n", None) else {
        return;
    };
    for program in PROGRAMS {
        let out = run_with_stdin(
            &mut served.client(program, "store", Some("abc"), &[]),
            b"plain value",
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains(
                "HTTP 400: the data is not a psi mapping and store.raw_values is 'reject'"
            ),
            "{}",
            stderr(&out)
        );

        let absent = served.sandbox.path().join("absent.sock");
        let out = served
            .client(
                program,
                "lookup",
                Some("abc"),
                &["--socket", absent.to_str().unwrap()],
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("cannot connect to"),
            "{}",
            stderr(&out)
        );
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

#[test]
fn podman_runs_containers_through_psi_client() {
    let token = std::ffi::OsStr::new("podman-token-1");
    let Some(env) = PodmanEnv::with_client("", &[("PSI_SOCKET_TOKEN", token)], "psi") else {
        return;
    };
    let conf = std::fs::read_to_string(env.sandbox.path().join("containers.conf")).unwrap();
    assert!(
        conf.contains(&format!("lookup = \"{} lookup --socket", psi_client_bin())),
        "{conf}"
    );
    assert!(!conf.contains("podman-token-1"), "token in psi.conf");

    let value = b"line one\r\nline two\n\0tail";
    check(
        &env.secret_create("raw", value, &[]),
        "podman secret create",
    );
    let out = env.run(
        &["raw,type=mount,target=/run/secrets/raw"],
        "cat /run/secrets/raw",
    );
    check(&out, "podman run (mount secret)");
    assert_eq!(out.stdout, value);
    let plain = b"p@ss w0rd\twith 'quotes'";
    check(
        &env.secret_create("plain", plain, &[]),
        "podman secret create",
    );
    let out = env.run(&["plain,type=env,target=PLAIN"], r#"printf %s "$PLAIN""#);
    check(&out, "podman run (env secret)");
    assert_eq!(out.stdout, plain);

    check(
        &env.podman().args(["secret", "rm", "raw"]).output().unwrap(),
        "podman secret rm",
    );
    assert!(env.serve.log().contains(r#""event":"secret.delete""#));
}

#[test]
fn podman_shows_psis_reason_for_a_refused_store_through_psi_client() {
    let Some(env) = PodmanEnv::with_client("store:\n  raw_values: reject\n", &[], "psi") else {
        return;
    };
    let out = env.secret_create("refused", b"plain value", &[]);
    assert!(!out.status.success());
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        shown.contains("store.raw_values is 'reject'"),
        "psi's reason not shown: {shown}"
    );
}
