//! The package and supply-chain rules of docs/packaging.md that hold without
//! building a .deb: the lock file's TLS stack and sources, the station unit's
//! hardening, and that the bundler config ships what the units and scripts name.
//! The package itself is installed and run by scripts/deb-test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=value` lines of a systemd unit (every value of a repeated key).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.trim().strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(|v| v.trim().to_string()).collect()
}

#[test]
fn the_lock_file_has_one_tls_stack_and_only_crates_io_sources() {
    let lock = read("Cargo.lock");
    let mut names = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |k: &str| {
            block.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim_matches(|c| c == ' ' || c == '=' || c == '"').to_string()))
        };
        let name = field("name").expect("a package without a name");
        if let Some(source) = field("source") {
            assert_eq!(source, "registry+https://github.com/rust-lang/crates.io-index", "{name} comes from outside crates.io");
        }
        names.push(name);
    }
    assert!(names.len() > 100, "Cargo.lock parsed to {} packages", names.len());
    for banned in ["openssl-sys", "openssl", "native-tls", "aws-lc-sys", "aws-lc-rs"] {
        assert!(!names.iter().any(|n| n == banned), "{banned} is in Cargo.lock: one TLS stack (rustls on ring)");
        // cargo-deny enforces the same list in scripts/test (deny.toml).
        assert!(read("deny.toml").contains(&format!("crate = \"{banned}\"")), "deny.toml does not ban {banned}");
    }
}

#[test]
fn the_station_unit_is_hardened_and_writes_only_the_data_dir() {
    let unit = read("deploy/systemd/imprint-station.service");
    let one = |k: &str| {
        let v = unit_values(&unit, k);
        assert_eq!(v.len(), 1, "{k}: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("User"), "imprint");
    assert_eq!(one("SupplementaryGroups"), "dialout");
    assert_eq!(one("ExecStart"), "/usr/bin/imprint station $IMPRINT_STATION_ARGS");
    assert_eq!(one("ReadWritePaths"), "/var/lib/imprint", "the data dir is the only writable path");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("UMask"), "0077");
    assert_eq!(one("Restart"), "on-failure");
    for (k, v) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes")] {
        assert_eq!(one(k), v, "{k}");
    }
    assert_eq!(one("CapabilityBoundingSet"), "", "no capabilities");
    assert!(unit_values(&unit, "Environment").contains(&"IMPRINT_DATA_DIR=/var/lib/imprint".to_string()));
    // The health check runs as the same user against the same data dir.
    let health = read("deploy/systemd/imprint-health.service");
    assert_eq!(unit_values(&health, "ExecStart"), ["/usr/bin/imprint health --json"]);
    assert_eq!(unit_values(&health, "User"), ["imprint"]);
    assert!(unit_values(&health, "Environment").contains(&"IMPRINT_DATA_DIR=/var/lib/imprint".to_string()));
}

#[test]
fn systemd_analyze_scores_the_station_unit_exposure_at_most_2() {
    let unit = repo().join("deploy/systemd/imprint-station.service");
    let out = match std::process::Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&unit).output() {
        Ok(out) => out,
        Err(e) => panic!("systemd-analyze (package systemd) is needed to score the unit: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for imprint-station.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(score <= 2.0, "exposure {score} > 2.0 (docs/packaging.md records the accepted items):\n{text}");
}

#[test]
fn the_deb_config_ships_the_units_the_udev_rule_and_executable_maintainer_scripts() {
    let conf: serde_json::Value = serde_json::from_str(&read("src-tauri/tauri.conf.json")).unwrap();
    let deb = &conf["bundle"]["linux"]["deb"];
    let files = deb["files"].as_object().expect("bundle.linux.deb.files");
    for dest in [
        "/usr/lib/systemd/system/imprint-station.service",
        "/usr/lib/systemd/system/imprint-health.service",
        "/usr/lib/systemd/system/imprint-health.timer",
        "/usr/lib/udev/rules.d/60-imprint-fixtures.rules",
    ] {
        let src = files.get(dest).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{dest} is not in the package"));
        assert!(repo().join("src-tauri").join(src).is_file(), "{dest} <- {src}: no such file");
    }
    for key in ["postInstallScript", "preRemoveScript", "postRemoveScript"] {
        let src = deb[key].as_str().unwrap_or_else(|| panic!("no {key}"));
        let path = repo().join("src-tauri").join(src);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{key} {src}: {e}"));
        assert!(text.starts_with("#!/bin/sh\n") && text.contains("set -e"), "{key}: a POSIX sh script with set -e");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_ne!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o111, 0, "{key} is not executable");
        }
        let sh = std::process::Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(sh.success(), "{key}: sh -n fails");
    }
    let postinst = read("deploy/deb/postinst");
    assert!(postinst.contains("--groups dialout") && postinst.contains("install -d -m 0700 -o imprint -g imprint /var/lib/imprint"));
    assert!(!postinst.contains("systemctl enable"), "the station is not enabled on install (it would make a development CA)");
    assert!(!read("deploy/deb/postrm").contains("rm -rf /var/lib/imprint"), "purge keeps the store");
}

#[test]
fn the_npm_tauri_cli_is_pinned_locked_and_matches_the_tauri_crate() {
    // scripts/deb bundles with ui/node_modules/.bin/tauri (the prebuilt CLI from npm, docs/packaging.md).
    let pkg: serde_json::Value = serde_json::from_str(&read("ui/package.json")).unwrap();
    let cli = pkg["devDependencies"]["@tauri-apps/cli"].as_str().expect("@tauri-apps/cli in ui devDependencies");
    assert!(cli.chars().all(|c| c.is_ascii_digit() || c == '.'), "@tauri-apps/cli is not pinned exactly: {cli}");
    let lock: serde_json::Value = serde_json::from_str(&read("ui/package-lock.json")).unwrap();
    let locked = &lock["packages"]["node_modules/@tauri-apps/cli"];
    assert_eq!(locked["version"].as_str(), Some(cli));
    assert!(locked["integrity"].as_str().is_some_and(|i| i.starts_with("sha512-")), "{locked}");
    let cargo_lock = read("Cargo.lock");
    let tauri = cargo_lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"tauri\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'))
        .expect("tauri in Cargo.lock");
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    assert_eq!(minor(cli), minor(tauri), "the bundler's CLI {cli} and the app's tauri {tauri} differ");
}
