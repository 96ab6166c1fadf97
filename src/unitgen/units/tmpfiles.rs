//! `psi.conf` for systemd-tmpfiles (`Target::Tmpfiles`): the host directories the units
//! mount or write, created before any unit starts.

use super::fragments::header;
use super::{ApplianceSpec, GeneratedFile, Target};

/// `psi.conf` for systemd-tmpfiles: every host directory the units mount or write that
/// nothing else creates (the state directory, a configured socket's directory, the TLS
/// output directories), at boot before any unit starts (and by `psi systemd install` at
/// once). The config directory holds the config file, the quadlet directory the quadlets or
/// setup's drop-ins, and the sockets' directories belong to the services that bind them.
pub(super) fn tmpfiles(spec: &ApplianceSpec) -> GeneratedFile {
    let mut dirs: Vec<(String, u32)> = vec![(spec.state_dir.host.clone(), 0o700)];
    if !spec.runtime_dir_managed {
        dirs.push((spec.runtime_dir.host.clone(), 0o755));
    }
    dirs.extend(
        spec.tls_dirs
            .iter()
            .map(|(dir, mode)| (dir.display().to_string(), *mode)),
    );
    let mut text = header(spec, "Directories psi's units use");
    for (dir, mode) in dirs {
        text.push_str(&format!("d {} {mode:04o} - - -\n", tmpfiles_path(&dir)));
    }
    GeneratedFile {
        target: Target::Tmpfiles,
        name: "psi.conf".into(),
        text,
        enable: false,
    }
}

/// A path as tmpfiles.d reads it: `%` is a specifier there, and whitespace separates fields.
fn tmpfiles_path(path: &str) -> String {
    let escaped = path.replace('%', "%%");
    if escaped.contains(char::is_whitespace) || escaped.contains('"') {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}
