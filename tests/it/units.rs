//! `psi systemd install` and `psi healthcheck`: the appliance's units.
//!
//! - golden files of every variant (`tests/it/golden/units/<variant>/`, `UPDATE_GOLDEN=1`
//!   rewrites them); the sandbox directory and the psi binary's path are replaced by
//!   `@DIR@` and `@PSI@` so the files do not depend on the machine;
//! - every quadlet through Podman 5's `quadlet -dryrun` (system and `-user`), with the
//!   options the generated services must carry;
//! - every native unit and timer through `systemd-analyze verify` with an empty stderr;
//! - the command: `--output-dir` writes exactly the golden set, a second run rewrites
//!   nothing, `--dry-run` writes nothing;
//! - `psi healthcheck` against a real `psi serve`, and without one.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use psi::config::{Overrides, Settings};
use psi::unitgen::units::{self, ApplianceSpec, GeneratedFile, Mode, Target};

use crate::support::{podman5, psi_bin, require, update_golden, Sandbox, ServeProcess};

const INFISICAL: &str = "  infisical:
    auth: {method: universal-auth, client_id: id, client_secret: secret}
    projects: {app: {id: p1}}
";
const TLS: &str = "    tls:
      certificates:
        web:
          project: app
          profile_id: prof
          common_name: web.example.com
          output: {cert: /etc/pki/web/cert.pem, key: /etc/pki/web/key.pem, chain: /etc/traefik/tls/chain.pem}
";

/// A named configuration rendered in one mode and scope.
struct Variant {
    name: &'static str,
    mode: Mode,
    user: bool,
    /// The config file's `providers:` block and what follows it.
    config: String,
    socket_token_credential: bool,
}

fn variants() -> Vec<Variant> {
    let v = |name, mode, user, config: String, token| Variant {
        name,
        mode,
        user,
        config,
        socket_token_credential: token,
    };
    vec![
        v(
            "native-system-infisical",
            Mode::Native,
            false,
            format!("providers:\n{INFISICAL}"),
            false,
        ),
        v(
            "native-system-tpm-tls",
            Mode::Native,
            false,
            format!("providers:\n{INFISICAL}{TLS}cache:\n  backend: tpm\n  refresh_interval: 30m\n"),
            false,
        ),
        v(
            "native-user-hsm-token",
            Mode::Native,
            true,
            format!("providers:\n{INFISICAL}  nitrokeyhsm:\n    pcscd_volume: hsm-pcscd\ncache:\n  backend: hsm\n"),
            true,
        ),
        v(
            "container-system-creds-only",
            Mode::Container,
            false,
            String::new(),
            false,
        ),
        v(
            "container-system-hsm-tls",
            Mode::Container,
            false,
            format!("ca_cert: /etc/psi/infisical-ca.pem\nproviders:\n{INFISICAL}{TLS}  nitrokeyhsm:\ncache:\n  backend: hsm\n"),
            false,
        ),
        v(
            "container-user-tpm-token",
            Mode::Container,
            true,
            format!("providers:\n{INFISICAL}cache:\n  backend: tpm\n"),
            true,
        ),
    ]
}

const IMAGE: &str = "ghcr.io/example/psi:1";

impl Variant {
    /// Writes the config into `dir` and renders the variant.
    fn render(&self, dir: &Path) -> Vec<GeneratedFile> {
        let config = dir.join("config.yaml");
        std::fs::write(&config, &self.config).unwrap();
        let env = |name: &str| match name {
            "HOME" => Some("/home/alice".into()),
            "XDG_RUNTIME_DIR" => Some("/run/user/1000".into()),
            _ => None,
        };
        let uid = if self.user { 1000 } else { 0 };
        let overrides = Overrides {
            config: Some(config),
            socket: None,
        };
        let settings = Settings::load(&overrides, &env, uid).unwrap();
        let image = (self.mode == Mode::Container).then_some(IMAGE);
        let mut spec =
            ApplianceSpec::from_settings(&settings, self.mode, image, Path::new(psi_bin()))
                .unwrap();
        spec.socket_token_credential |= self.socket_token_credential;
        units::appliance(&spec)
    }

    fn golden_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/golden/units")
            .join(self.name)
    }
}

/// The machine-independent form of a rendered file.
fn normalize(text: &str, dir: &Path) -> String {
    text.replace(psi_bin(), "@PSI@")
        .replace(&dir.display().to_string(), "@DIR@")
}

/// Compares the files with the golden directory: the same names, the same text.
fn assert_golden_dir(dir: &Path, files: &[(String, String)]) {
    if update_golden() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut expected: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(names, expected, "file set of {}", dir.display());
    for (name, text) in files {
        let golden = std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(text, &golden, "drifted from {}/{name}", dir.display());
    }
}

#[test]
fn units_golden_files() {
    for variant in variants() {
        let dir = tempfile::tempdir().unwrap();
        let files = variant.render(dir.path());
        // Sorted by (target, name), as the contract says.
        let keys: Vec<(Target, &str)> = files.iter().map(|f| (f.target, f.name.as_str())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{}", variant.name);
        let normalized: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.name.clone(), normalize(&f.text, dir.path())))
            .collect();
        assert_golden_dir(&variant.golden_dir(), &normalized);
    }
}

/// One generated unit of quadlet's `-dryrun` output (`---NAME---` starts each).
fn section<'a>(output: &'a str, name: &str) -> &'a str {
    let marker = format!("---{name}---\n");
    let start = output
        .find(&marker)
        .unwrap_or_else(|| panic!("quadlet generated no {name}:\n{output}"))
        + marker.len();
    let rest = &output[start..];
    &rest[..rest.find("\n---").unwrap_or(rest.len())]
}

#[test]
fn quadlet_accepts_the_container_units() {
    let Some(root) = podman5::chroot() else {
        return;
    };
    let quadlet = root.join("usr/libexec/podman/quadlet");
    for variant in variants().into_iter().filter(|v| v.mode == Mode::Container) {
        let name = variant.name;
        let dir = tempfile::tempdir().unwrap();
        let quadlets = dir.path().join("quadlets");
        std::fs::create_dir(&quadlets).unwrap();
        let files = variant.render(dir.path());
        for file in files.iter().filter(|f| f.target == Target::Quadlet) {
            std::fs::write(quadlets.join(&file.name), &file.text).unwrap();
        }
        let mut cmd = Command::new(&quadlet);
        cmd.args(["-dryrun", "-no-kmsg-log"])
            .env("QUADLET_UNIT_DIRS", &quadlets);
        if variant.user {
            cmd.arg("-user");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}\n{stdout}");
        for line in stderr.lines() {
            assert!(line.contains("Loading source unit file"), "{name}: {line}");
        }
        let serve = section(&stdout, "psi-secrets.service");
        let exec = serve
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_else(|| panic!("{name}: no ExecStart:\n{serve}"));
        let mut wanted = vec![
            " --name psi-secrets ",
            " --sdnotify=container ",
            " --health-cmd \"psi healthcheck\" ",
            " --health-on-failure kill ",
            " --network host ",
        ];
        let hsm = variant.config.contains("nitrokeyhsm");
        if hsm {
            wanted.push(" -v pcscd-socket:/run/pcscd:rw ");
            wanted.push(" --env CREDENTIALS_DIRECTORY=/run/credentials ");
            assert!(
                serve
                    .lines()
                    .any(|l| l == "LoadCredentialEncrypted=hsm-pin"),
                "{name}"
            );
            assert!(
                serve
                    .lines()
                    .any(|l| l == "Wants=network-online.target podman.socket pcscd.service"),
                "{name}:\n{serve}"
            );
        }
        if variant.user {
            wanted.push(" -v %t/psi:/run/psi:Z ");
            wanted.push(" -v /home/alice/.local/share/psi:/var/lib/psi:Z ");
        } else {
            wanted.push(" -v /run/psi:/run/psi:Z ");
            wanted.push(" -v /var/lib/psi:/var/lib/psi:Z ");
        }
        if variant.socket_token_credential {
            wanted.push(" -v %d:/run/credentials:ro ");
            assert!(
                serve
                    .lines()
                    .any(|l| l == "LoadCredentialEncrypted=psi-socket-token"),
                "{name}"
            );
        }
        for part in wanted {
            assert!(exec.contains(part), "{name}: no {part:?} in {exec}");
        }
        assert!(exec.ends_with(&format!(" {IMAGE} serve")), "{name}: {exec}");
        if variant.config.contains("infisical") {
            let setup = section(&stdout, "psi-infisical-setup.service");
            // The socket's directory (a re-created socket stays reachable), the host's
            // systemd through its bus, and the Podman API socket unit required.
            let (podman_dir, private) = if variant.user {
                (
                    " -v %t/podman:/run/podman ",
                    " -v %t/bus:/run/dbus/system_bus_socket ",
                )
            } else {
                (
                    " -v /run/podman:/run/podman ",
                    " -v /run/dbus/system_bus_socket:/run/dbus/system_bus_socket ",
                )
            };
            assert!(setup.contains(podman_dir), "{name}:\n{setup}");
            assert!(setup.contains(private), "{name}:\n{setup}");
            assert!(
                setup.contains(" -v /run/systemd/system:/run/systemd/system:ro "),
                "{name}:\n{setup}"
            );
            assert!(
                setup.contains("Requires=podman.socket psi-secrets.service"),
                "{name}:\n{setup}"
            );
            assert!(
                setup.contains(&format!(" {IMAGE} setup --provider infisical")),
                "{name}"
            );
        }
    }
}

/// `systemd-analyze verify` of `paths` (user manager when `user`): rc 0 and nothing on
/// stderr, where unknown keys and missing binaries are reported.
fn verify(paths: &[PathBuf], user: bool, runtime: &Path, what: &str) {
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let out = cmd
        .args(["verify", "--man=no"])
        .args(paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{what}: {stderr}"
    );
}

#[test]
fn systemd_analyze_accepts_the_native_units() {
    if !require("systemd-analyze") {
        return;
    }
    for variant in variants() {
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir(&units).unwrap();
        let files = variant.render(dir.path());
        // Container mode's unit-dir files name quadlet-generated services, which do not
        // exist for verify; their text is the same fragments as native mode's.
        if variant.mode == Mode::Container {
            continue;
        }
        let mut paths = Vec::new();
        for file in files.iter().filter(|f| f.target == Target::Unit) {
            let path = units.join(&file.name);
            std::fs::write(&path, &file.text).unwrap();
            paths.push(path);
        }
        verify(&paths, variant.user, dir.path(), variant.name);
    }
}

/// Modification time and inode: an atomic rewrite changes both.
fn stamp(path: &Path) -> (i64, i64, u64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.mtime(), meta.mtime_nsec(), meta.ino())
}

fn tree(dir: &Path, sub: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir.join(sub))
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.unwrap();
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        normalize(&text, dir),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn install_writes_the_golden_set_once() {
    // The command runs as this test's user: the system-scope variants when that is root.
    let root = nix::unistd::getuid().is_root();
    for variant in variants()
        .into_iter()
        .filter(|v| v.user != root && !v.socket_token_credential)
    {
        let name = variant.name;
        let sandbox = Sandbox::new();
        let dir = sandbox.path();
        let config = dir.join("config.yaml");
        std::fs::write(&config, &variant.config).unwrap();
        let out_dir = dir.join("out");
        let install = |extra: &[&str]| {
            let mut cmd = sandbox.psi();
            cmd.args(["-c", config.to_str().unwrap(), "systemd", "install"])
                .args(["--output-dir", out_dir.to_str().unwrap()])
                .args(extra);
            match variant.mode {
                Mode::Native => cmd.args(["--mode", "native"]),
                Mode::Container => cmd.args(["--mode", "container", "--image", IMAGE]),
            };
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };

        let printed = install(&["--dry-run"]);
        assert!(!out_dir.exists(), "{name}: --dry-run wrote files");
        assert!(printed.contains("[Install]"), "{name}: {printed}");

        install(&[]);
        let mut written = tree(dir, "out/quadlets");
        written.extend(tree(dir, "out/units"));
        written.extend(tree(dir, "out/tmpfiles.d"));
        // The golden files were rendered from a temporary directory of their own.
        let golden: Vec<(String, String)> = {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(variant.golden_dir()).unwrap() {
                let entry = entry.unwrap();
                files.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(entry.path()).unwrap(),
                ));
            }
            files.sort();
            files
        };
        written.sort();
        assert_eq!(written, golden, "{name}");

        let all: Vec<PathBuf> = ["quadlets", "units", "tmpfiles.d"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(out_dir.join(sub)).into_iter().flatten())
            .map(|e| e.unwrap().path())
            .collect();
        let before: Vec<_> = all.iter().map(|p| stamp(p)).collect();
        let second = install(&[]);
        assert!(!second.contains("Wrote "), "{name}: {second}");
        let after: Vec<_> = all.iter().map(|p| stamp(p)).collect();
        assert_eq!(before, after, "{name}: a second run rewrote files");
    }
}

#[test]
fn healthcheck_against_serve() {
    if !require("systemd-creds") {
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.config("");
    let config = config.to_str().unwrap();
    let healthcheck = |extra: &[&str]| {
        let out = sandbox
            .psi()
            .args(["-c", config, "healthcheck"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No server: exit 1, saying why.
    let (code, stderr) = healthcheck(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");

    let mut serve_cmd = sandbox.psi();
    serve_cmd.args(["-c", config, "serve"]);
    let mut serve = ServeProcess::start(
        serve_cmd,
        &sandbox.socket(),
        sandbox.path().join("serve.log"),
    );
    assert_eq!(healthcheck(&[]).0, Some(0));
    // The cache is disabled here (no backend): /healthz/cache answers 200 as well.
    assert_eq!(healthcheck(&["--cache"]).0, Some(0));
    // --socket names another socket.
    let elsewhere = sandbox.path().join("nothing.sock");
    assert_eq!(
        healthcheck(&["--socket", elsewhere.to_str().unwrap()]).0,
        Some(1)
    );
    serve.stop();
}
