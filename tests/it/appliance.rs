//! The appliance as a user deploys it, under a real systemd: Debian trixie (systemd 257,
//! Podman 5.4.2) booted with systemd-nspawn (`support::machine`), psi's image built from the
//! Containerfile, the fake Infisical listening on the machine's own loopback. Nothing is
//! started, reloaded or fixed by hand inside the machine beyond the commands README gives.
//!
//! Slow (it builds psi's image the first time on a machine, and boots six times), so
//! `#[ignore]`d like the image test: `scripts/test` runs it explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::machine::Machine;
use crate::support::{psi_bin, require_all};

const PROJECT: &str = "8e6f31c4-0a45-4a8e-9a3e-0d2b1f3c4d5e";
const CA: &str = "ca-boot";
const PROFILE: &str = "profile-boot";
/// The tag psi's image has in the machines.
const IMAGE: &str = "localhost/psi:boot";
/// Where the fake Infisical listens, on the machine's loopback.
const PORT: u16 = 8080;

/// The workload: psi's own image (the machines have no other), appending what it received to
/// a file on each start, one line per start: `DB_USER=<env> DB_PASS=<file>`.
const WORKLOAD: &str = "[Unit]
Description=A workload whose secrets come only from psi setup's drop-in

[Container]
Image=localhost/psi:boot
Entrypoint=/bin/sh
Exec=-c 'printf \"DB_USER=%%s DB_PASS=%%s\\n\" \"$DB_USER\" \"$(cat /run/secrets/db_pass)\" >> /out/log'
Volume=/var/lib/myapp:/out:Z
Network=host

[Service]
Type=oneshot
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

/// A host unit the TLS hook restarts; it counts its runs.
const HOOK_TARGET: &str = "[Unit]
Description=Stands in for nginx: restarted by psi's TLS hook

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo restarted >> /var/lib/tls-hook-ran'
";

fn config(tls: bool, cache: bool) -> String {
    let mut yaml = format!(
        "providers:
  systemd-creds: {{}}
  infisical:
    api_url: http://127.0.0.1:{PORT}
    retries: 1
    auth:
      method: universal-auth
      client_id: client-1
      client_secret: secret-1
    projects:
      web:
        id: {PROJECT}
        environment: prod
"
    );
    if tls {
        yaml.push_str(&format!(
            "    tls:
      certificates:
        api:
          project: web
          profile_id: {PROFILE}
          common_name: api.example.com
          output:
            cert: /etc/pki/api/cert.pem
            key: /etc/pki/api/key.pem
            chain: /etc/pki/api/chain.pem
          hooks:
            - systemctl restart tls-hook.service
"
        ));
    }
    if cache {
        yaml.push_str("cache:\n  enabled: true\n  backend: tpm\n");
    }
    yaml.push_str(
        "workloads:
  myapp:
    secrets:
      - project: web
        path: /app
      - project: web
        path: /files
        files:
          DB_PASS: {target: /run/secrets/db_pass}
",
    );
    yaml
}

fn fake(machine: &Machine) -> FakeInfisical {
    let fake = FakeInfisical::start_in_netns(Generation::Current, &machine.netns(), PORT);
    fake.add_universal_auth("client-1", "secret-1", 3600, 86400);
    fake.add_project(PROJECT, "web-project");
    fake.set_secret(PROJECT, "prod", "/app", "DB_USER", "alice");
    fake.set_secret(PROJECT, "prod", "/files", "DB_PASS", "s3cret pass");
    fake.add_ca(CA);
    fake.add_cert_profile(PROFILE, CA);
    fake
}

/// psi's image, built once per run, as an archive in `dir`.
fn image(dir: &Path) -> Option<PathBuf> {
    if !require_all(&["systemd-nspawn", "debootstrap", "podman"]) {
        return None;
    }
    let started = Instant::now();
    let archive = crate::image::archive(dir, IMAGE)?;
    eprintln!("psi image archive ready in {:?}", started.elapsed());
    Some(archive)
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The workload's lines so far.
fn workload_log(machine: &Machine) -> Vec<String> {
    let out = machine.exec(&["cat", "/var/lib/myapp/log"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn show(machine: &Machine, unit: &str, property: &str) -> String {
    machine
        .exec_ok(&["systemctl", "show", "-P", property, unit])
        .trim()
        .to_owned()
}

/// Every unit named `psi-*` that failed, with its journal.
fn assert_no_failed_psi_unit(machine: &Machine, when: &str) {
    let failed: Vec<String> = machine
        .failed_units()
        .into_iter()
        .filter(|u| u.starts_with("psi-"))
        .collect();
    let journals: String = failed
        .iter()
        .map(|u| format!("--- {u}\n{}", machine.journal(u)))
        .collect();
    assert!(failed.is_empty(), "{when}: failed {failed:?}\n{journals}");
}

fn assert_active(machine: &Machine, unit: &str, when: &str) {
    let state = show(machine, unit, "ActiveState");
    assert_eq!(state, "active", "{when}: {unit}\n{}", machine.journal(unit));
}

const EXPECTED: &str = "DB_USER=alice DB_PASS=s3cret pass";

#[test]
#[ignore = "builds psi's image and boots machines: minutes; scripts/test runs it"]
fn container_appliance_from_ignition_comes_up_at_every_boot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) = image(dir.path()) else {
        return;
    };
    let Some(mut machine) = Machine::new("appliance") else {
        return;
    };
    let mut fake = fake(&machine);
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config(true, true)).unwrap();
    // Exactly README's command on the provisioning side.
    let out = Command::new(psi_bin())
        .args(["-c", config_path.to_str().unwrap()])
        .args(["butane", "--image", IMAGE, "--ignition", "--spec", "3.3.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    machine.apply_ignition(&String::from_utf8(out.stdout).unwrap());
    machine.load_image(&archive);
    let root = machine.root().to_path_buf();
    write(&root, "/etc/containers/systemd/myapp.container", WORKLOAD);
    write(&root, "/etc/systemd/system/tls-hook.service", HOOK_TARGET);
    std::fs::create_dir_all(root.join("var/lib/myapp")).unwrap();

    // First boot.
    machine.boot();
    let when = "first boot";
    assert_active(&machine, "psi-secrets.service", when);
    machine.exec_ok(&["podman", "exec", "psi-secrets", "psi", "healthcheck"]);
    assert_active(&machine, "psi-infisical-setup.service", when);
    assert_eq!(
        show(&machine, "psi-infisical-setup.service", "Result"),
        "success"
    );
    assert_active(&machine, "psi-cache-key.service", when);
    assert!(
        root.join("etc/psi/cache.key").exists(),
        "{when}: no cache key"
    );
    for timer in ["psi-infisical-refresh.timer", "psi-tls-renew.timer"] {
        assert_active(&machine, timer, when);
    }
    assert_no_failed_psi_unit(&machine, when);
    assert_eq!(
        workload_log(&machine),
        [EXPECTED],
        "{when}: {}",
        machine.journal("myapp.service")
    );
    assert_eq!(show(&machine, "myapp.service", "NeedDaemonReload"), "no");
    for file in ["cert.pem", "key.pem", "chain.pem"] {
        assert!(
            root.join("etc/pki/api").join(file).exists(),
            "{when}: no {file}\n{}",
            machine.journal("psi-tls-renew.service")
        );
    }
    let hook = machine.exec_ok(&["cat", "/var/lib/tls-hook-ran"]);
    assert_eq!(hook, "restarted\n", "{when}: the hook's unit ran once");

    // Two more boots: the workload gets its values every time.
    for boot in 2..=3 {
        machine.reboot();
        let when = format!("boot {boot}");
        assert_active(&machine, "psi-secrets.service", &when);
        assert_no_failed_psi_unit(&machine, &when);
        let log = workload_log(&machine);
        assert_eq!(log.len(), boot, "{when}: {log:?}");
        assert!(log.iter().all(|l| l == EXPECTED), "{when}: {log:?}");
    }

    // A key added upstream reaches the workload's unit through the refresh service, with
    // systemd reloaded by setup from its container.
    fake.set_secret(PROJECT, "prod", "/app", "API_KEY", "key-1");
    machine.exec_ok(&["systemctl", "start", "psi-infisical-refresh.service"]);
    assert_eq!(show(&machine, "myapp.service", "NeedDaemonReload"), "no");
    let exec = show(&machine, "myapp.service", "ExecStart");
    assert!(
        exec.contains("myapp--API_KEY,type=env,target=API_KEY"),
        "{exec}"
    );

    // Infisical down: the workload restarts with its values from psi's cache, once serve
    // has loaded the file setup just rewrote (it polls the file; three entries now).
    let loaded = machine.wait_for_log(
        "psi-secrets.service",
        &[r#""event":"cache.load""#, r#""entries":3"#],
        std::time::Duration::from_secs(30),
    );
    assert!(
        loaded.is_some(),
        "the refreshed cache was not loaded:\n{}",
        machine.journal("psi-secrets.service")
    );
    fake.stop();
    machine.exec_ok(&["systemctl", "restart", "myapp.service"]);
    let log = workload_log(&machine);
    assert_eq!(log.last().map(String::as_str), Some(EXPECTED), "{log:?}");
    assert_eq!(log.len(), 4);
    machine.poweroff();
}

#[test]
#[ignore = "builds psi's image and boots machines: minutes; scripts/test runs it"]
fn container_appliance_by_hand_and_register() {
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) = image(dir.path()) else {
        return;
    };
    let Some(mut machine) = Machine::new("by-hand") else {
        return;
    };
    machine.load_image(&archive);
    let root = machine.root().to_path_buf();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(psi_bin(), root.join("usr/local/bin/psi")).unwrap();
    write(
        &root,
        "/etc/psi/config.yaml",
        "providers:\n  systemd-creds: {}\n",
    );
    machine.boot();

    // README's commands for a fresh host in container mode.
    machine.exec_ok(&["psi", "install"]);
    machine.exec_ok(&[
        "psi",
        "systemd",
        "install",
        "--mode",
        "container",
        "--image",
        IMAGE,
    ]);
    machine.exec_ok(&["systemctl", "start", "psi-secrets.service"]);
    assert_active(&machine, "psi-secrets.service", "started by hand");
    machine.exec_ok(&["podman", "exec", "psi-secrets", "psi", "healthcheck"]);

    // The operator's flow: the value sealed in the container, registered through the API.
    let out = machine.exec_stdin(
        &[
            "podman",
            "exec",
            "-i",
            "psi-secrets",
            "psi",
            "creds",
            "store",
            "demo",
            "--register",
        ],
        b"by-hand value",
    );
    assert!(out.status.success(), "{out:?}");
    let shown = machine.exec_ok(&[
        "podman",
        "run",
        "--rm",
        "--network",
        "none",
        "--secret",
        "demo,type=env,target=V",
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        "printf %s \"$V\"",
    ]);
    assert_eq!(shown, "by-hand value");
    // And a raw value through Podman: only the ID on stdout.
    let out = machine.exec_stdin(&["podman", "secret", "create", "raw", "-"], b"v");
    assert!(out.status.success(), "{out:?}");
    let id = machine.exec_ok(&["podman", "secret", "inspect", "--format", "{{.ID}}", "raw"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), id);
    machine.poweroff();
}

#[test]
#[ignore = "builds psi's image and boots machines: minutes; scripts/test runs it"]
fn native_appliance_survives_a_reboot() {
    if !require_all(&["systemd-nspawn", "debootstrap"]) {
        return;
    }
    let Some(mut machine) = Machine::new("native") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The workload runs psi's image; natively the host has it only for the workload.
    let Some(archive) = image(dir.path()) else {
        return;
    };
    machine.load_image(&archive);
    let mut fake = fake(&machine);
    let root = machine.root().to_path_buf();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(psi_bin(), root.join("usr/local/bin/psi")).unwrap();
    write(&root, "/etc/psi/config.yaml", &config(false, true));
    write(&root, "/etc/containers/systemd/myapp.container", WORKLOAD);
    std::fs::create_dir_all(root.join("var/lib/myapp")).unwrap();
    machine.boot();

    // README's commands for a plain systemd host.
    machine.exec_ok(&["psi", "install"]);
    machine.exec_ok(&["psi", "systemd", "install", "--mode", "native", "--enable"]);
    machine.reboot();
    assert_active(&machine, "psi-secrets.service", "native, after reboot");
    assert_active(
        &machine,
        "psi-infisical-setup.service",
        "native, after reboot",
    );
    assert_no_failed_psi_unit(&machine, "native, after reboot");
    let log = workload_log(&machine);
    assert_eq!(log.last().map(String::as_str), Some(EXPECTED), "{log:?}");
    fake.stop();
    machine.poweroff();
}

/// A second workload, left with the default `on_change: none`: appends its `DB_USER` on
/// each start.
const OTHER: &str = "[Unit]
Description=A workload that keeps running when its secrets change

[Container]
Image=localhost/psi:boot
Entrypoint=/bin/sh
Exec=-c 'printf \"DB_USER=%%s\\n\" \"$DB_USER\" >> /out/log'
Volume=/var/lib/other:/out:Z
Network=host

[Service]
Type=oneshot
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

#[test]
#[ignore = "builds psi's image and boots machines: minutes; scripts/test runs it"]
fn native_appliance_restarts_a_workload_whose_secret_changed() {
    if !require_all(&["systemd-nspawn", "debootstrap"]) {
        return;
    }
    let Some(mut machine) = Machine::new("rotation") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) = image(dir.path()) else {
        return;
    };
    machine.load_image(&archive);
    let fake = fake(&machine);
    let root = machine.root().to_path_buf();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(psi_bin(), root.join("usr/local/bin/psi")).unwrap();
    let config = config(false, true).replace(
        "  myapp:\n    secrets:\n",
        "  myapp:\n    on_change: restart\n    secrets:\n",
    ) + "  other:\n    secrets:\n      - project: web\n        path: /app\n        env: {DB_USER: DB_USER}\n";
    write(&root, "/etc/psi/config.yaml", &config);
    write(&root, "/etc/containers/systemd/myapp.container", WORKLOAD);
    write(&root, "/etc/containers/systemd/other.container", OTHER);
    for dir in ["var/lib/myapp", "var/lib/other"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    machine.boot();
    machine.exec_ok(&["psi", "install"]);
    machine.exec_ok(&["psi", "systemd", "install", "--mode", "native", "--enable"]);
    machine.reboot();
    let when = "rotation, after reboot";
    assert_active(&machine, "psi-infisical-setup.service", when);
    assert_no_failed_psi_unit(&machine, when);
    // (The first boot, before psi was installed, started both without secrets.)
    let before = workload_log(&machine);
    assert_eq!(before.last().map(String::as_str), Some(EXPECTED), "{when}");
    let other_log = || machine.exec_ok(&["cat", "/var/lib/other/log"]);
    let other_before = other_log();
    assert!(
        other_before.ends_with("\nDB_USER=alice\n"),
        "{when}: {other_before}"
    );
    let myapp_run = show(&machine, "myapp.service", "InvocationID");
    let other_run = show(&machine, "other.service", "InvocationID");

    // The value changes upstream; the refresh runs as the timer would start it.
    fake.set_secret(PROJECT, "prod", "/app", "DB_USER", "bob");
    let started = Instant::now();
    machine.exec_ok(&["systemctl", "start", "psi-infisical-refresh.service"]);
    let refreshed = started.elapsed();
    let rotated = "DB_USER=bob DB_PASS=s3cret pass";
    // Setup queued myapp's restart (`--no-block`); a transient unit ordered after myapp
    // starts only once that job is done, so waiting for it waits for the restart.
    machine.exec_ok(&[
        "systemd-run",
        "--wait",
        "--quiet",
        "--property=After=myapp.service",
        "true",
    ]);
    let total = started.elapsed();
    let journal = machine.journal("psi-infisical-setup.service");
    assert!(
        workload_log(&machine).last().map(String::as_str) == Some(rotated),
        "myapp did not restart with the new value: {:?}\n{journal}\n{}",
        workload_log(&machine),
        machine.journal("myapp.service")
    );
    eprintln!("refresh service done in {refreshed:?}; myapp restarted with the new value {total:?} after the refresh started");
    assert_ne!(show(&machine, "myapp.service", "InvocationID"), myapp_run);
    assert_eq!(workload_log(&machine).len(), before.len() + 1);
    assert!(
        journal.contains("  secrets changed: myapp--DB_USER; restart queued"),
        "{journal}"
    );
    assert!(
        journal.contains("psi serve loaded the new cache"),
        "{journal}"
    );
    // `on_change: none`: still running with the old value, and reported.
    assert_eq!(show(&machine, "other.service", "InvocationID"), other_run);
    assert_eq!(other_log(), other_before);
    assert!(
        journal
            .contains("  values changed upstream: other--DB_USER; not restarted (on_change: none)"),
        "{journal}"
    );
    assert_no_failed_psi_unit(&machine, "rotation, after the refresh");
    machine.poweroff();
}
