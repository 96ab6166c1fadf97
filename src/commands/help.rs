//! `psi completions SHELL` and `psi man`: shell completions and man pages generated from the
//! clap definitions in [`crate::cli`], so they can never disagree with what psi accepts.
//! Both run before the configuration is loaded (a broken config must not break the shell's
//! tab key) and touch nothing but their output.

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::error::{Error, Result};
use crate::fsutil;

use super::write_stdout;

/// Man pages are read by every user: 0644, like those in /usr/share/man.
const PAGE_MODE: u32 = 0o644;

/// Writes `shell`'s completion script for psi to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "psi", &mut script);
    write_stdout(&script)
}

/// Without `--dir`, psi's own page to stdout; with it, one page per command (`psi.1`,
/// `psi-setup.1`, `psi-infisical-tls-renew.1`, ...) written atomically into DIR.
pub fn man(args: &ManArgs) -> Result<()> {
    let pages = pages().map_err(|err| Error::Io {
        context: "cannot render the man pages".into(),
        source: err,
    })?;
    let Some(dir) = &args.dir else {
        // The first page is the root command's.
        return write_stdout(&pages[0].1);
    };
    fsutil::ensure_dir(dir, 0o755)?;
    for (name, page) in &pages {
        fsutil::write_atomic(&dir.join(name), page, PAGE_MODE)?;
    }
    println!("{} man pages written to {}", pages.len(), dir.display());
    Ok(())
}

/// Every visible command's page as (file name, roff), the root first. The tree is built
/// once, without clap's `help` subcommand (which would get pages of its own), so each
/// subcommand knows its full display name (`psi-infisical-tls`).
fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    collect(&root, &mut pages)?;
    Ok(pages)
}

fn collect(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render(&mut page)?;
    pages.push((man.get_filename(), page));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_and_help_has_none() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names[0], "psi.1");
        for expected in [
            "psi-setup.1",
            "psi-infisical-tls.1",
            "psi-systemd-install.1",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("-help")), "{names:?}");
        let root = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(root.contains(".TH psi 1"), "{root}");
    }
}
