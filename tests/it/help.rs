//! `psi completions` and `psi man`, checked by the programs that consume them: bash, zsh and
//! fish load the scripts and complete psi's commands, groff renders the pages without a
//! warning. Both must work without a usable configuration file.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::support::{require, Sandbox};

/// `psi ARGS` with a configuration path that does not exist: generated help must not need one.
fn psi(sandbox: &Sandbox, args: &[&str]) -> Output {
    let out = sandbox
        .psi()
        .env("PSI_CONFIG", "/nonexistent/config.yaml")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psi {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The completion script for `shell`, written into the sandbox.
fn script(sandbox: &Sandbox, shell: &str) -> std::path::PathBuf {
    let path = sandbox.path().join(format!("psi.{shell}"));
    std::fs::write(&path, psi(sandbox, &["completions", shell]).stdout).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completes_commands_and_flags() {
    let sandbox = Sandbox::new();
    let path = script(&sandbox, "bash");
    // What bash does on `psi se<TAB>` and `psi setup --dr<TAB>`: it sets COMP_WORDS and
    // COMP_CWORD and calls the function with the command, the current and the previous word.
    let complete = |words: &[&str]| {
        let cword = words.len() - 1;
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{}'; \
             COMP_POINT=${{#COMP_LINE}}; _psi psi '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            words.join(" "),
            words.join(" "),
            words[cword],
            words[cword - 1],
        );
        run("bash", &["-c", &program])
    };
    let commands = complete(&["psi", "se"]);
    let mut names: Vec<&str> = commands.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["secret", "serve", "setup"], "{commands}");
    assert_eq!(complete(&["psi", "setup", "--dr"]), "--dry-run\n");
}

#[test]
fn fish_completes_commands() {
    if !require("fish") {
        return;
    }
    let sandbox = Sandbox::new();
    let path = script(&sandbox, "fish");
    let program = format!("source {}; complete -C 'psi se'", path.display());
    let out = run("fish", &["--no-config", "-c", &program]);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    for expected in ["serve", "secret", "setup"] {
        assert!(names.contains(&expected), "{out}");
    }
}

#[test]
fn zsh_script_is_a_compdef_for_psi() {
    if !require("zsh") {
        return;
    }
    let sandbox = Sandbox::new();
    let path = script(&sandbox, "zsh");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#compdef psi\n"), "{text}");
    // Parses (-n: read, do not run); completing needs an interactive zsh.
    run("zsh", &["-n", path.to_str().unwrap()]);
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Sandbox::new()
        .psi()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}

/// groff's rendering of a page, failing on any warning (`-ww`: all of them).
fn render(page: &std::path::Path) -> String {
    let out = Command::new("groff")
        // -P-bcu: plain text, no overstruck bold or underlines to search through.
        .args(["-man", "-Tutf8", "-ww", "-P-bcu"])
        .arg(page)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_prints_psis_page_and_writes_one_per_command() {
    if !require("groff") {
        return;
    }
    let sandbox = Sandbox::new();
    let page = psi(&sandbox, &["man"]).stdout;
    let root = sandbox.path().join("stdout.1");
    std::fs::write(&root, &page).unwrap();
    let text = render(&root);
    assert!(text.contains("psi-setup(1)"), "{text}");

    let dir = sandbox.path().join("man1");
    let out = psi(&sandbox, &["man", "--dir", dir.to_str().unwrap()]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{} man pages written to {}\n", names.len(), dir.display())
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("-help") || n.starts_with('.')),
        "{names:?}"
    );
    assert_eq!(std::fs::read(dir.join("psi.1")).unwrap(), page);
    for name in &names {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644, "{name}");
    }
    let setup = render(&dir.join("psi-setup.1"));
    assert!(setup.contains("--dry-run"), "{setup}");
    assert!(
        names.contains(&"psi-infisical-tls-renew.1".to_owned()),
        "{names:?}"
    );
}
