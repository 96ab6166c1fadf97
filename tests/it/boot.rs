//! Boot tests: a real systemd machine (Debian trixie, systemd 257, Podman 5.4.2) booted with
//! systemd-nspawn, see `support::machine`. These two prove the harness itself: a machine
//! boots, runs containers, reaches a fake Infisical served in its own network, reboots with
//! its state kept, takes Ignition configs and images before its first boot, and leaves
//! nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine;
use serde_json::json;

use crate::support::infisical::{FakeInfisical, Generation};
use crate::support::machine::{Machine, IGNITION};
use crate::support::podman::base_conf;
use crate::support::require;

#[test]
fn machine_boots_runs_containers_and_reboots() {
    let started = Instant::now();
    let Some(mut machine) = Machine::new("smoke") else {
        return;
    };
    eprintln!(
        "{}: ready (rootfs cached or built) in {:?}",
        machine.name(),
        started.elapsed()
    );
    let booted = Instant::now();
    machine.boot();
    eprintln!("boot to running: {:?}", booted.elapsed());
    let state = machine.state();
    assert!(
        state == "running" || state == "degraded",
        "state {state}, failed units: {:?}",
        machine.failed_units()
    );
    assert_eq!(
        machine.failed_units(),
        Vec::<String>::new(),
        "a clean boot fails no unit"
    );
    assert_eq!(
        machine
            .exec_ok(&["podman", "version", "--format", "{{.Client.Version}}"])
            .trim(),
        "5.4.2"
    );
    let first_id = machine.exec_ok(&["cat", "/etc/machine-id"]);
    assert_ne!(first_id.trim(), "uninitialized");

    // A base image from the machine's own busybox-static: no registry is reachable.
    machine.sh_ok(
        "mkdir -p /tmp/bb/bin && cp /usr/bin/busybox /tmp/bb/bin/ \
         && for a in sh cat echo; do ln -s busybox /tmp/bb/bin/$a; done \
         && tar -C /tmp/bb -c . | podman import - localhost/bb",
    );
    let hello = machine.exec_ok(&[
        "podman",
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/bb",
        "echo",
        "hello",
    ]);
    assert_eq!(hello, "hello\n");
    let value = b"line one\nbytes \x00\xff as they are";
    let echoed = machine.exec_stdin(
        &[
            "podman",
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "localhost/bb",
            "cat",
        ],
        value,
    );
    assert!(echoed.status.success(), "{echoed:?}");
    assert_eq!(echoed.stdout, value);

    // The fake Infisical on the machine's loopback, as an appliance would reach its server.
    let mut fake = FakeInfisical::start_in_netns(Generation::Current, &machine.netns(), 8080);
    fake.add_universal_auth("client-1", "secret-1", 60, 3600);
    let login = |machine: &Machine, fake: &FakeInfisical| {
        let reply = machine.exec_ok(&[
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "--header",
            "Content-Type: application/json",
            "--post-data",
            r#"{"clientId":"client-1","clientSecret":"secret-1"}"#,
            &format!("{}/api/v1/auth/universal-auth/login", fake.url()),
        ]);
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(reply["accessToken"].is_string(), "{reply}");
    };
    login(&machine, &fake);
    fake.stop();
    fake.restart();
    login(&machine, &fake);
    assert_eq!(fake.logins(), 2);
    drop(fake);

    // A reboot keeps what was written to disk and is not a first boot again.
    machine.sh_ok("echo kept > /var/lib/psi-boot-marker");
    let boot_id = machine.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"]);
    let rebooted = Instant::now();
    machine.reboot();
    eprintln!(
        "reboot (poweroff + boot to running): {:?}",
        rebooted.elapsed()
    );
    assert_eq!(machine.state(), "running", "{}", machine.failed_report());
    assert_ne!(
        machine.exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"]),
        boot_id
    );
    assert_eq!(
        machine.exec_ok(&["cat", "/var/lib/psi-boot-marker"]),
        "kept\n"
    );
    assert_eq!(machine.exec_ok(&["cat", "/etc/machine-id"]), first_id);
    machine.exec_ok(&["podman", "image", "exists", "localhost/bb"]);
    assert_eq!(
        machine.console_log().matches("Detected first boot").count(),
        1,
        "only the first boot is a first boot"
    );

    let dir = machine.dir().to_owned();
    let cgroup = machine.cgroup().to_owned();
    let dropped = Instant::now();
    drop(machine);
    eprintln!("drop (poweroff + cleanup): {:?}", dropped.elapsed());
    assert_nothing_left(&dir, &cgroup);
}

#[test]
fn ignition_and_an_image_loaded_before_the_first_boot() {
    if !require("podman") || !require(IGNITION) || !require("tar") {
        return;
    }
    let Some(mut machine) = Machine::new("first-boot") else {
        return;
    };
    let host = tempfile::Builder::new()
        .prefix("psi-boot-image.")
        .tempdir()
        .unwrap();
    let archive = host_archive(&machine.root().join("usr/bin/busybox"), host.path());
    machine.load_image(&archive);

    let quadlet = "[Unit]\nDescription=psi boot test: the image loaded before boot\n\
                   [Container]\nImage=localhost/psi-boot-loaded\nExec=echo loaded image ran\n\
                   Network=none\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
                   [Install]\nWantedBy=multi-user.target\n";
    let unit = "[Unit]\nDescription=psi boot test: enabled by Ignition\n\
                [Service]\nType=oneshot\nRemainAfterExit=yes\n\
                ExecStart=/bin/cp /etc/psi-boot/greeting /run/psi-boot-check\n\
                [Install]\nWantedBy=multi-user.target\n";
    let config = json!({
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [
            {"path": "/etc/psi-boot/greeting", "mode": 420,
             "contents": {"source": data_url("written by ignition\n")}},
            {"path": "/etc/containers/systemd/psi-loaded.container", "mode": 420,
             "contents": {"source": data_url(quadlet)}},
        ]},
        "systemd": {"units": [
            {"name": "psi-boot-check.service", "enabled": true, "contents": unit},
        ]},
    });
    machine.apply_ignition(&config.to_string());
    let root = machine.root().to_owned();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/psi-boot/greeting")).unwrap(),
        "written by ignition\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system/psi-boot-check.service")).unwrap(),
        unit
    );
    // Ignition enables through a preset, which only a first boot applies.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system-preset/20-ignition.preset")).unwrap(),
        "enable psi-boot-check.service\n"
    );
    assert!(!root.join("etc/selinux/config").exists());

    machine.boot();
    assert_eq!(machine.state(), "running", "{}", machine.failed_report());
    assert!(machine.console_log().contains("Detected first boot"));
    assert_eq!(
        machine
            .exec_ok(&["systemctl", "is-enabled", "psi-boot-check.service"])
            .trim(),
        "enabled"
    );
    assert_eq!(
        machine.exec_ok(&["cat", "/run/psi-boot-check"]),
        "written by ignition\n",
        "{}",
        machine.journal("psi-boot-check.service")
    );
    // Quadlet ran the image from the archive: the machine has no route to any registry.
    let routes = machine.sh("ip route show default | grep .");
    assert!(!routes.status.success(), "a default route: {routes:?}");
    let journal = machine.journal("psi-loaded.service");
    assert_eq!(
        machine
            .exec_ok(&["systemctl", "is-active", "psi-loaded.service"])
            .trim(),
        "active",
        "{journal}"
    );
    assert!(journal.contains("loaded image ran"), "{journal}");
}

/// After a machine is dropped: no directory, no cgroup, no mount of it.
fn assert_nothing_left(dir: &Path, cgroup: &Path) {
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        !mounts.contains(name),
        "a mount of {name} is left:\n{mounts}"
    );
}

/// A busybox image archive made by the host's Podman (4.3.1) in a store of its own
/// (TESTING.md): `busybox` packed as a root file system, `podman import`, then `podman save
/// --format oci-archive`.
fn host_archive(busybox: &Path, dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs/bin");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(busybox, rootfs.join("busybox")).unwrap();
    for applet in ["sh", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join(applet)).unwrap();
    }
    std::fs::write(dir.join("containers.conf"), base_conf(dir)).unwrap();
    let archive = dir.join("image.tar");
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tar = dir.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(dir.join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {out:?}");
    podman(&["import", tar.to_str().unwrap(), "localhost/psi-boot-loaded"]);
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/psi-boot-loaded",
    ]);
    archive
}

/// An RFC 2397 data URL for an Ignition file's contents.
fn data_url(text: &str) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}
