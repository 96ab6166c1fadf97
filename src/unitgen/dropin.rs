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

/// The Podman secret names a drop-in references (the first field of each `Secret=` line),
/// for comparing a workload's drop-in with what Podman holds.
pub fn referenced_secrets(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Secret="))
        .filter_map(|rest| rest.split(',').next())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
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
