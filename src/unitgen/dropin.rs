//! `{workload}.container.d/50-secrets.conf`: the quadlet drop-in that hands a workload's
//! Podman secrets to its container, as environment variables or as files.
//!
//! The `[Container]` section is the original's (one `Secret=` line per key). The `[Unit]`
//! section is new: the original ordered a workload only after its `depends_on`, so at every
//! boot the workload raced psi's lookup service and could start before its secrets resolved
//! ("no such secret", exit 126). Here the workload starts after psi-secrets (ready once its
//! socket is bound) and after the setup unit that registers its secrets. The dependency is
//! `Wants=`, not `Requires=`: secrets are read only at container start, so stopping or
//! restarting psi must not take the workload down with it, and a setup that fails (Infisical
//! down) must still let the workload start with what Podman and psi's cache already hold.
//!
//! Lines are sorted so that the same plan always renders the same bytes: the file is
//! rewritten, and systemd reloaded, only when something really changed.
//!
//! [`read`] is the reader beside the writer: it turns `Secret=` lines back into
//! [`SecretLine`]s, for `psi run` and for comparing a drop-in with what Podman holds.

use std::collections::BTreeSet;

/// How a container receives one secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    /// `type=env,target=VAR`.
    Env { var: String },
    /// `type=mount,target=...[,mode=...][,uid=...][,gid=...]`.
    Mount {
        target: String,
        mode: Option<String>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

/// One `Secret=` line: the Podman secret and how it is delivered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretLine {
    pub name: String,
    pub delivery: Delivery,
}

impl SecretLine {
    /// Where the value lands: the environment variable, or the file's target.
    pub fn target(&self) -> &str {
        match &self.delivery {
            Delivery::Env { var } => var,
            Delivery::Mount { target, .. } => target,
        }
    }

    fn render(&self) -> String {
        match &self.delivery {
            Delivery::Env { var } => format!("Secret={},type=env,target={var}", self.name),
            Delivery::Mount {
                target,
                mode,
                uid,
                gid,
            } => {
                let mut line = format!("Secret={},type=mount,target={target}", self.name);
                if let Some(mode) = mode {
                    line.push_str(&format!(",mode={mode}"));
                }
                if let Some(uid) = uid {
                    line.push_str(&format!(",uid={uid}"));
                }
                if let Some(gid) = gid {
                    line.push_str(&format!(",gid={gid}"));
                }
                line
            }
        }
    }
}

/// Everything the drop-in says.
#[derive(Debug, Clone, Copy)]
pub struct DropIn<'a> {
    /// psi's units the secrets come from: the lookup service and the provider's setup unit.
    pub psi_units: &'a [String],
    /// Further units the container starts after and wants (`depends_on`).
    pub depends_on: &'a [String],
    pub secrets: &'a [SecretLine],
}

/// The drop-in's directory name for a workload (`windmill-worker@` -> `windmill-worker@.container.d`).
pub fn dir_name(workload: &str) -> String {
    format!("{workload}.container.d")
}

/// The file name inside it.
pub const FILE_NAME: &str = "50-secrets.conf";

pub fn render(spec: &DropIn<'_>) -> String {
    let mut out = String::new();
    let units: Vec<&str> = spec
        .psi_units
        .iter()
        .chain(spec.depends_on)
        .map(String::as_str)
        .collect();
    if !units.is_empty() {
        let units = units.join(" ");
        out.push_str(&format!("[Unit]\nAfter={units}\nWants={units}\n\n"));
    }
    out.push_str("[Container]\n");
    let lines: BTreeSet<String> = spec.secrets.iter().map(SecretLine::render).collect();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The `Secret=` lines of a drop-in (or any quadlet), in file order: the reader for what
/// [`render`] writes, so `psi run` and the comparison with Podman read the file the way it
/// was written. Pure: text in, lines out.
pub fn read(text: &str) -> Vec<SecretLine> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Secret="))
        .filter_map(parse_secret)
        .collect()
}

/// One `Secret=` value (the text after `Secret=`): `NAME[,type=env|mount][,target=...]
/// [,mode=...][,uid=...][,gid=...]`, with Podman's defaults: type `mount`, and the target
/// the secret's name. `None` when the name is empty. Unknown options, and a `uid`/`gid`
/// that is not a number, are left out: psi never writes them, and no reader here needs them.
pub fn parse_secret(value: &str) -> Option<SecretLine> {
    let mut fields = value.split(',').map(str::trim);
    let name = fields.next().filter(|name| !name.is_empty())?.to_owned();
    let (mut env, mut target, mut mode, mut uid, mut gid) = (false, None, None, None, None);
    for field in fields {
        match field.split_once('=') {
            Some(("type", kind)) => env = kind == "env",
            Some(("target", value)) => target = Some(value.to_owned()),
            Some(("mode", value)) => mode = Some(value.to_owned()),
            Some(("uid", value)) => uid = value.parse().ok(),
            Some(("gid", value)) => gid = value.parse().ok(),
            _ => {}
        }
    }
    let target = target.unwrap_or_else(|| name.clone());
    let delivery = if env {
        Delivery::Env { var: target }
    } else {
        Delivery::Mount {
            target,
            mode,
            uid,
            gid,
        }
    };
    Some(SecretLine { name, delivery })
}

/// The Podman secret names a drop-in references, for comparing a workload's drop-in with
/// what Podman holds.
pub fn referenced_secrets(text: &str) -> BTreeSet<String> {
    read(text).into_iter().map(|line| line.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, var: &str) -> SecretLine {
        SecretLine {
            name: name.into(),
            delivery: Delivery::Env { var: var.into() },
        }
    }

    #[test]
    fn original_layout_for_env_secrets() {
        let secrets = [
            env("myapp--DB_PASS", "DB_PASS"),
            env("myapp--DB_HOST", "DB_HOST"),
        ];
        let text = render(&DropIn {
            psi_units: &[],
            depends_on: &[],
            secrets: &secrets,
        });
        assert_eq!(
            text,
            "[Container]\nSecret=myapp--DB_HOST,type=env,target=DB_HOST\nSecret=myapp--DB_PASS,type=env,target=DB_PASS\n"
        );
        assert_eq!(
            referenced_secrets(&text).into_iter().collect::<Vec<_>>(),
            ["myapp--DB_HOST", "myapp--DB_PASS"]
        );
    }

    #[test]
    fn reads_back_what_it_renders() {
        let secrets = [
            env("w--A", "VAR_A"),
            SecretLine {
                name: "w--CERT".into(),
                delivery: Delivery::Mount {
                    target: "/etc/tls/cert.pem".into(),
                    mode: Some("0400".into()),
                    uid: Some(1000),
                    gid: Some(0),
                },
            },
            SecretLine {
                name: "w--KEY".into(),
                delivery: Delivery::Mount {
                    target: "KEY".into(),
                    mode: None,
                    uid: None,
                    gid: None,
                },
            },
        ];
        let text = render(&DropIn {
            psi_units: &["psi-secrets.service".into()],
            depends_on: &[],
            secrets: &secrets,
        });
        assert_eq!(read(&text), secrets);
    }

    #[test]
    fn podman_defaults_when_options_are_left_out() {
        let text = "[Container]\n  Secret= db ,target=DB_PASS \nSecret=plain\nSecret=e,type=env\nSecret=\n# Secret=x\n";
        let got: Vec<(String, bool, String)> = read(text)
            .iter()
            .map(|l| {
                let env = matches!(l.delivery, Delivery::Env { .. });
                (l.name.clone(), env, l.target().to_owned())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("db".into(), false, "DB_PASS".into()),
                ("plain".into(), false, "plain".into()),
                ("e".into(), true, "e".into()),
            ]
        );
    }

    #[test]
    fn duplicate_lines_collapse() {
        let secrets = [env("w--A", "A"), env("w--A", "A")];
        let text = render(&DropIn {
            psi_units: &[],
            depends_on: &[],
            secrets: &secrets,
        });
        assert_eq!(text, "[Container]\nSecret=w--A,type=env,target=A\n");
    }

    #[test]
    fn ordered_after_psi_then_depends_on() {
        let secrets = [env("w--A", "A")];
        let text = render(&DropIn {
            psi_units: &[
                "psi-secrets.service".into(),
                "psi-infisical-setup.service".into(),
            ],
            depends_on: &["db.service".into()],
            secrets: &secrets,
        });
        assert_eq!(
            text,
            "[Unit]\n\
             After=psi-secrets.service psi-infisical-setup.service db.service\n\
             Wants=psi-secrets.service psi-infisical-setup.service db.service\n\n\
             [Container]\nSecret=w--A,type=env,target=A\n"
        );
    }
}
