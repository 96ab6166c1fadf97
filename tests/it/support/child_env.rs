//! What psi's children inherit: a caller's environment holding psi's secrets, set on the psi
//! command under test (never on the test process), and the parsed `env -0` of a child.

use std::collections::BTreeMap;
use std::process::Command;

/// psi's own secrets, or where to read them: no child of psi may see these.
pub const SECRETS: [(&str, &str); 3] = [
    ("PSI_SOCKET_TOKEN", "leak-check-token"),
    ("PSI_NITROKEYHSM_PIN", "648219"),
    ("CREDENTIALS_DIRECTORY", "/nonexistent/psi-credentials"),
];

/// Meant for psi alone: helpers do not see them, `psi run`'s command (which takes psi's place
/// and acts for the caller) does.
pub const PSI_ONLY: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDLEAKCHECK"),
    ("NOTIFY_SOCKET", "/nonexistent/notify"),
];

/// An ordinary variable of the caller's, which every child keeps.
pub const CALLER: (&str, &str) = ("PSI_TEST_CALLER", "kept");

/// Gives `psi` the caller's environment above.
pub fn caller_env(psi: &mut Command) -> &mut Command {
    psi.envs(SECRETS.iter().chain(&PSI_ONLY).chain([&CALLER]).copied())
}

/// The environment a child printed with `env -0`.
pub fn parse(dump: &[u8]) -> BTreeMap<String, String> {
    dump.split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// Asserts that a helper's environment has none of psi's variables and the caller's own.
pub fn assert_helper(env: &BTreeMap<String, String>) {
    for (name, _) in SECRETS.iter().chain(&PSI_ONLY) {
        assert!(!env.contains_key(*name), "a helper inherited {name}");
    }
    assert_eq!(env.get(CALLER.0).map(String::as_str), Some(CALLER.1));
}
