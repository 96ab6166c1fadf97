//! `psi butane` and `unitgen::butane`: Butane YAML and Ignition JSON for Fedora CoreOS.
//!
//! - data URLs: every byte round-trips through an independent decoder, and is escaped the way
//!   Butane's data URL library escapes it;
//! - YAML block scalars: tricky contents (no final newline, leading spaces, `#`, `:`, quotes,
//!   CRLF, control characters) parsed back with serde_yaml give the exact text, which is also
//!   exactly what the Ignition data URL decodes to;
//! - the command: Ignition 3.3.0 output of several configs passes Debian's
//!   `ignition-validate` with no output at all (Butane itself cannot be installed here, and
//!   `ignition-validate` rejects 3.4.0, so 3.4.0 and the Butane YAML are checked structurally);
//! - golden files under `tests/it/golden/butane/` (`UPDATE_GOLDEN=1` rewrites them).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use psi::unitgen::butane::{
    self, data_url, yaml_text, IgnitionSpec, Provision, ProvisionFile, ProvisionUnit,
};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::support::{assert_golden, require, Sandbox};

/// A decoder written from RFC 2397 alone, not from the encoder: `data:,` with `%XX` escapes
/// (any other character stands for itself and must be URL-safe), or `data:;base64,`.
fn decode_data_url(url: &str) -> Vec<u8> {
    if let Some(b64) = url.strip_prefix("data:;base64,") {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("valid base64");
    }
    let text = url.strip_prefix("data:,").expect("a data URL");
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
            i += 3;
        } else {
            assert!(
                bytes[i].is_ascii_alphanumeric() || b"-_.!~*'()".contains(&bytes[i]),
                "unescaped {:?} in {url}",
                bytes[i] as char
            );
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn every_byte_round_trips_through_a_data_url() {
    for b in 0..=255u8 {
        let url = data_url(&[b]);
        assert_eq!(decode_data_url(&url), [b], "{url}");
        // One byte: percent-encoding is never longer than base64 (4 characters + 7 more
        // prefix), so it is always the form Butane picks, upper-case hex as Go's %02X.
        let expected = if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            format!("data:,{}", b as char)
        } else {
            format!("data:,%{b:02X}")
        };
        assert_eq!(url, expected);
    }
    let all: Vec<u8> = (0..=255u8).collect();
    let url = data_url(&all);
    assert!(url.starts_with("data:;base64,"), "binary goes base64");
    assert_eq!(decode_data_url(&url), all);
    // And again, each run of bytes, to cover both encodings at many lengths.
    for len in 0..64 {
        let chunk: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(decode_data_url(&data_url(&chunk)), chunk);
    }
}

#[test]
fn data_url_picks_the_shorter_encoding() {
    let text = "[Unit]\nDescription=x\n";
    assert_eq!(
        data_url(text.as_bytes()),
        "data:,%5BUnit%5D%0ADescription%3Dx%0A"
    );
    // Mostly escapes: base64 is shorter, as Butane picks it.
    let url = data_url("a b c d e f g h\n".as_bytes());
    assert!(url.starts_with("data:;base64,"), "{url}");
}

/// Contents a YAML block scalar can get wrong.
fn tricky() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/t/plain", "[Unit]\nDescription=x\n"),
        ("/t/no-final-newline", "a: b\nc"),
        ("/t/leading-spaces", "  indented\nnot\n"),
        ("/t/leading-tab", "\tindented\n"),
        ("/t/first-line-blank", "\n  x\n"),
        ("/t/spaces-only-line", "a\n   \nb\n"),
        ("/t/trailing-spaces", "a  \nb \n"),
        ("/t/many-final-newlines", "x\n\n\n"),
        (
            "/t/specials",
            "# not a comment\nkey: value # x\n\"q\" 'q' `q` {a} [b] & * ! | > % @\n--- \n...\n",
        ),
        ("/t/crlf", "a\r\nb\r\n"),
        ("/t/control", "bell\u{7}\u{0}nul\u{1b}[0m\n"),
        ("/t/unicode", "Grüße — ✓\u{2028}sep\u{85}nel\u{feff}\n"),
        ("/t/empty", ""),
        ("/t/only-newlines", "\n\n"),
        ("/t/backslash", "C:\\path\\n\n"),
        ("/t/path with space:and#hash", "x\n"),
    ]
}

fn tricky_provision() -> Provision {
    Provision {
        comments: vec!["top\n\nsecond".into()],
        files: tricky()
            .into_iter()
            .map(|(path, contents)| ProvisionFile {
                path: path.into(),
                mode: 0o640,
                contents: contents.into(),
                comment: path
                    .contains("specials")
                    .then(|| "a: comment # here".into()),
            })
            .collect(),
        units: vec![
            ProvisionUnit {
                name: "psi-refresh.timer".into(),
                enabled: true,
            },
            ProvisionUnit {
                name: "psi-disabled@x.service".into(),
                enabled: false,
            },
        ],
        directories: vec![(PathBuf::from("/etc/psi"), 0o700)],
    }
}

#[test]
fn yaml_block_scalars_round_trip_exactly() {
    for (_, text) in tricky() {
        for indent in [2, 4, 10] {
            let doc = format!("{}k: {}", " ".repeat(indent - 2), yaml_text(text, indent));
            let value: Yaml = serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{doc}\n{e}"));
            assert_eq!(value["k"].as_str(), Some(text), "{doc}");
        }
    }
}

/// The mode as Butane reads it: `0640` is octal to go-yaml v3 (serde_yaml, YAML 1.2,
/// keeps a leading-zero number as a string).
fn butane_mode(value: &Yaml) -> u32 {
    let text = value.as_str().expect("mode written as 0NNN");
    assert!(text.starts_with('0'), "{text}");
    u32::from_str_radix(text, 8).unwrap()
}

/// Checks the Butane YAML and Ignition JSON of `p` agree: same paths, modes, units, and
/// the inline text of each file is byte for byte what its data URL decodes to.
fn assert_butane_matches_ignition(yaml: &str, json: &str, p: &Provision) {
    let y: Yaml = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
    let j: Json = serde_json::from_str(json).unwrap();
    assert_eq!(y["variant"].as_str(), Some("fcos"));
    assert_eq!(y["version"].as_str(), Some("1.5.0"));

    let ydirs = y["storage"]["directories"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let jdirs = j["storage"]["directories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ydirs.len(), p.directories.len());
    assert_eq!(jdirs.len(), p.directories.len());
    for ((yd, jd), (path, mode)) in ydirs.iter().zip(&jdirs).zip(&p.directories) {
        assert_eq!(yd["path"].as_str(), Some(path.to_str().unwrap()));
        assert_eq!(jd["path"].as_str(), Some(path.to_str().unwrap()));
        assert_eq!(butane_mode(&yd["mode"]), *mode);
        assert_eq!(jd["mode"].as_u64(), Some(u64::from(*mode)));
    }

    let yfiles = y["storage"]["files"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let jfiles = j["storage"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(yfiles.len(), p.files.len());
    assert_eq!(jfiles.len(), p.files.len());
    for ((yf, jf), file) in yfiles.iter().zip(&jfiles).zip(&p.files) {
        let path = file.path.to_str().unwrap();
        assert_eq!(yf["path"].as_str(), Some(path));
        assert_eq!(jf["path"].as_str(), Some(path));
        assert_eq!(butane_mode(&yf["mode"]), file.mode, "{path}");
        assert_eq!(jf["mode"].as_u64(), Some(u64::from(file.mode)), "{path}");
        assert_eq!(yf["overwrite"].as_bool(), Some(true));
        assert_eq!(jf["overwrite"].as_bool(), Some(true));
        let inline = yf["contents"]["inline"].as_str().expect("inline contents");
        let decoded = decode_data_url(jf["contents"]["source"].as_str().unwrap());
        assert_eq!(inline.as_bytes(), decoded.as_slice(), "{path}");
        assert_eq!(inline, file.contents, "{path}");
    }

    let yunits = y["systemd"]["units"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let junits = j["systemd"]["units"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(yunits.len(), p.units.len());
    for ((yu, ju), unit) in yunits.iter().zip(&junits).zip(&p.units) {
        assert_eq!(yu["name"].as_str(), Some(unit.name.as_str()));
        assert_eq!(ju["name"].as_str(), Some(unit.name.as_str()));
        assert_eq!(yu["enabled"].as_bool(), Some(unit.enabled));
        assert_eq!(ju["enabled"].as_bool(), Some(unit.enabled));
    }
}

#[test]
fn butane_and_ignition_agree_on_tricky_contents() {
    let p = tricky_provision();
    let yaml = butane::butane(&p, "fcos", "1.5.0");
    let json = butane::ignition(&p, IgnitionSpec::V3_3_0);
    assert_butane_matches_ignition(&yaml, &json, &p);
    assert!(
        yaml.starts_with("# top\n#\n# second\nvariant: fcos\n"),
        "{yaml}"
    );
    assert!(yaml.contains("    # a: comment # here\n    - path: /t/specials\n"));
    if require("ignition-validate") {
        validate(&json);
    }
}

/// Runs `ignition-validate` on `json`: it must accept it and say nothing.
fn validate(json: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.ign");
    std::fs::write(&path, json).unwrap();
    let out = Command::new("ignition-validate")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "ignition-validate: {said}\n{json}"
    );
}

/// (case, config.yaml, extra arguments)
const CASES: &[(&str, &str, &[&str])] = &[
    ("defaults", "", &[]),
    (
        "token-nitrokey",
        "socket_token: abcdefghijklmnopqrstuvwxyz012345\nproviders:\n  nitrokeyhsm:\n    pin: \"12:34 #x\"\n    pcscd_volume: hsm-pcscd\n",
        &[],
    ),
    (
        "reference",
        "socket_token: abcdefghijklmnopqrstuvwxyz012345\n",
        &["--config-file", "reference"],
    ),
    (
        "native",
        "socket_token: abcdefghijklmnopqrstuvwxyz012345\nstate_dir: /var/lib/psi-state\nsocket_path: /run/psi-x/psi.sock\n",
        &["--mode", "native"],
    ),
];

/// Runs `psi -c CONFIG butane ARGS...`; returns stdout (the command must succeed).
fn psi_butane(sandbox: &Sandbox, config: &str, args: &[&str]) -> String {
    let path = sandbox.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = sandbox
        .psi()
        .arg("-c")
        .arg(&path)
        .arg("butane")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psi butane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn butane_command_golden_and_valid() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/butane");
    let validator = require("ignition-validate");
    for (case, config, extra) in CASES {
        let sandbox = Sandbox::new();
        let yaml = psi_butane(&sandbox, config, extra);
        let ign33 = psi_butane(
            &sandbox,
            config,
            &[*extra, &["--ignition", "--spec", "3.3.0"]].concat(),
        );
        let ign34 = psi_butane(&sandbox, config, &[*extra, &["--ignition"]].concat());
        assert_golden(&golden.join(format!("{case}.bu")), &yaml);
        assert_golden(&golden.join(format!("{case}.ign")), &ign33);

        let j33: Json = serde_json::from_str(&ign33).unwrap();
        let j34: Json = serde_json::from_str(&ign34).unwrap();
        assert_eq!(j33["ignition"]["version"], "3.3.0");
        assert_eq!(
            j34["ignition"]["version"], "3.4.0",
            "--spec defaults to fcos 1.5.0's"
        );
        // Only the version differs between the two specs for what psi writes.
        let mut same = j34.clone();
        same["ignition"]["version"] = "3.3.0".into();
        assert_eq!(same, j33);
        if validator {
            validate(&ign33);
        }

        // The YAML against the JSON, file by file, without a Provision to compare with:
        // rebuild one from the JSON (the decoded data URLs) and check the YAML matches it.
        let p = provision_from_ignition(&j33);
        assert_butane_matches_ignition(&yaml, &ign33, &p);
        let config_file = p
            .files
            .iter()
            .find(|f| f.path == Path::new("/etc/psi/config.yaml"));
        if extra.contains(&"reference") {
            assert!(config_file.is_none());
            assert!(
                yaml.contains("# /etc/psi/config.yaml is not embedded"),
                "{yaml}"
            );
        } else {
            let file = config_file.expect("the config file is embedded");
            assert_eq!(file.contents, *config);
            assert_eq!(file.mode, 0o600);
            assert!(
                yaml.contains("    # CREDENTIALS: psi's config.yaml"),
                "{yaml}"
            );
            assert!(yaml.contains("LoadCredentialEncrypted="));
        }
        let conf = p
            .files
            .iter()
            .find(|f| f.path == Path::new("/etc/containers/containers.conf.d/psi.conf"))
            .expect("psi.conf");
        assert!(conf.contents.starts_with("[secrets]\ndriver = \"shell\"\n"));
        let has_token = config.contains("socket_token");
        let native = extra.contains(&"native");
        assert_eq!(conf.mode, if has_token && !native { 0o600 } else { 0o644 });
        assert_eq!(conf.contents.contains("curl "), !native);
        let pcscd = p.files.iter().any(|f| f.path.ends_with("pcscd.container"));
        assert_eq!(pcscd, config.contains("nitrokeyhsm"));
    }
}

#[test]
fn native_mode_keeps_the_token_out_of_psi_conf() {
    let sandbox = Sandbox::new();
    let (_, config, extra) = CASES.iter().find(|c| c.0 == "native").unwrap();
    let json: Json = serde_json::from_str(&psi_butane(
        &sandbox,
        config,
        &[*extra, &["--ignition"]].concat(),
    ))
    .unwrap();
    let p = provision_from_ignition(&json);
    let conf = p
        .files
        .iter()
        .find(|f| f.path.ends_with("psi.conf"))
        .unwrap();
    assert!(!conf.contents.contains("abcdefghijklmnopqrstuvwxyz012345"));
    assert!(conf.contents.contains(
        "/usr/local/bin/psi client lookup --socket /run/psi-x/psi.sock --token-file /var/lib/psi-state/.socket-token"
    ));
    let token = p
        .files
        .iter()
        .find(|f| f.path == Path::new("/var/lib/psi-state/.socket-token"))
        .unwrap();
    assert_eq!(
        (token.mode, token.contents.as_str()),
        (0o600, "abcdefghijklmnopqrstuvwxyz012345")
    );
}

#[test]
fn bad_spec_variant_and_version_are_usage_errors() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("config.yaml");
    std::fs::write(&path, "").unwrap();
    for args in [
        &["--ignition", "--spec", "3.5.0"][..],
        &["--spec", "3.3.0"],
        &["--variant", "openshift"],
        &["--version", "9.9.9"],
    ] {
        let out = sandbox
            .psi()
            .arg("-c")
            .arg(&path)
            .arg("butane")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}

/// A Provision rebuilt from Ignition JSON (comments are not in JSON).
fn provision_from_ignition(j: &Json) -> Provision {
    let list = |v: &Json| v.as_array().cloned().unwrap_or_default();
    Provision {
        comments: Vec::new(),
        files: list(&j["storage"]["files"])
            .iter()
            .map(|f| ProvisionFile {
                path: f["path"].as_str().unwrap().into(),
                mode: f["mode"].as_u64().unwrap() as u32,
                contents: String::from_utf8(decode_data_url(
                    f["contents"]["source"].as_str().unwrap(),
                ))
                .unwrap(),
                comment: None,
            })
            .collect(),
        units: list(&j["systemd"]["units"])
            .iter()
            .map(|u| ProvisionUnit {
                name: u["name"].as_str().unwrap().into(),
                enabled: u["enabled"].as_bool().unwrap(),
            })
            .collect(),
        directories: list(&j["storage"]["directories"])
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap().into(),
                    d["mode"].as_u64().unwrap() as u32,
                )
            })
            .collect(),
    }
}

/// The checked-in examples: `butane/psi.bu` and `butane/psi.ign` are `psi butane` of
/// `examples/config.yaml`, and `quadlets/` holds the units that provision places under
/// `/etc/containers/systemd` and `/etc/systemd/system`, which are exactly what
/// `psi systemd install` renders for that configuration at its default path. The test fails
/// when any of them drifts from the generator; `UPDATE_GOLDEN=1` refreshes them.
#[test]
fn checked_in_examples_match_the_generator() {
    if !require("ignition-validate") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("examples/config.yaml");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_psi"))
            .env_remove("PSI_SOCKET_TOKEN")
            .env_remove("PSI_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .args([
                "--log-level",
                "error",
                "-c",
                config.to_str().unwrap(),
                "butane",
            ])
            .args(["--image", "ghcr.io/quickvm/psi:latest"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let yaml = run(&[]);
    let json = run(&["--ignition", "--spec", "3.3.0"]);
    validate(&json);
    assert_golden(&root.join("butane/psi.bu"), &yaml);
    assert_golden(&root.join("butane/psi.ign"), &json);

    // The unit files inside, one by one, against quadlets/ and the renderer itself.
    let ignition: Json = serde_json::from_str(&json).unwrap();
    let settings = psi::config::Settings::load(
        &psi::config::Overrides {
            config: Some(config.clone()),
            ..Default::default()
        },
        &|_| None,
        0,
    )
    .unwrap();
    let spec = psi::unitgen::units::ApplianceSpec::from_settings(
        &settings,
        psi::unitgen::units::Mode::Container,
        Some("ghcr.io/quickvm/psi:latest"),
        Path::new("/usr/local/bin/psi"),
    )
    .unwrap()
    .with_default_config();
    let rendered = psi::unitgen::units::appliance(&spec);
    let mut seen = 0;
    for file in ignition["storage"]["files"].as_array().unwrap() {
        let path = Path::new(file["path"].as_str().unwrap());
        let dir = path.parent().unwrap();
        let examples = match dir.to_str().unwrap() {
            "/etc/containers/systemd" | "/etc/systemd/system" => "quadlets",
            "/etc/tmpfiles.d" => "tmpfiles.d",
            _ => continue,
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = decode_data_url(file["contents"]["source"].as_str().unwrap());
        let text = String::from_utf8(bytes).unwrap();
        assert_golden(&root.join(examples).join(name), &text);
        if let Some(unit) = rendered.iter().find(|f| f.name == name) {
            assert_eq!(unit.text, text, "{name} differs from psi systemd install's");
            seen += 1;
        }
    }
    assert_eq!(seen, rendered.len(), "every rendered unit is provisioned");
}
