//! Layering rules from ARCHITECTURE.md that a build would not catch.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

const FORBIDDEN: &[&str] = &["tauri", "rusqlite", "sqlx", "serialport", "cryptoki", "tokio", "rumqttc"];

fn deps_of(krate: &str) -> Vec<String> {
    let path = if krate == "src-tauri" {
        format!("{}/../src-tauri/Cargo.toml", env!("CARGO_MANIFEST_DIR"))
    } else {
        format!("{}/../crates/{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = l == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = l.split_once(['=', '.']) {
                if !name.trim().is_empty() {
                    out.push(name.trim().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn proto_and_core_depend_on_no_io_crate() {
    for krate in ["imprint-proto", "imprint-core"] {
        let deps = deps_of(krate);
        assert!(!deps.is_empty(), "{krate}: no dependencies parsed");
        for d in &deps {
            assert!(!FORBIDDEN.contains(&d.as_str()), "{krate} depends on {d}");
        }
    }
}

#[test]
fn proto_has_no_crypto_or_store_dependency() {
    let deps = deps_of("imprint-proto");
    for d in ["ring", "rcgen", "x509-parser", "imprint-store", "imprint-core"] {
        assert!(!deps.iter().any(|x| x == d), "imprint-proto depends on {d}");
    }
}

/// The shells (the `imprint` CLI and the desktop app) are adapters over
/// imprint-api: they depend on no other imprint crate and on nothing that
/// does I/O below it, and their sources name no lower crate.
#[test]
fn shells_reach_nothing_past_the_api() {
    for shell in ["imprint-cli", "src-tauri"] {
        let deps = deps_of(shell);
        assert!(deps.iter().any(|d| d == "imprint-api"), "{shell} does not use imprint-api: {deps:?}");
        for d in &deps {
            assert!(!d.starts_with("imprint-") || d == "imprint-api", "{shell} depends on {d}: call imprint-api instead");
            assert!(
                !["rusqlite", "sqlx", "serialport", "cryptoki", "tokio", "rumqttc", "csv", "pem"].contains(&d.as_str()),
                "{shell} depends on {d}: that work belongs in a library"
            );
        }
        let dir = if shell == "src-tauri" { "../src-tauri/src".to_string() } else { format!("../crates/{shell}/src") };
        let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for lower in [
                    "imprint_station",
                    "imprint_store",
                    "imprint_proto",
                    "imprint_core",
                    "imprint_signer",
                    "imprint_sync",
                    "imprint_serial",
                    "imprint_devsim",
                    "imprint_mqtt",
                ] {
                    assert!(!text.contains(&format!("{lower}::")), "{} names {lower}: go through imprint_api", path.display());
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "no sources found in {dir}");
    }
}

/// The API crate knows no shell: no Tauri, no CLI parser.
#[test]
fn the_api_knows_no_shell() {
    let deps = deps_of("imprint-api");
    for d in ["tauri", "clap", "indicatif"] {
        assert!(!deps.iter().any(|x| x == d), "imprint-api depends on {d}");
    }
}

/// A device dialect is a sans-IO state machine like the native session: it
/// knows no store, signer, port, station or clock, does no crypto beyond
/// SHA-256 (the attestation's signature is kept, not verified), and the
/// driver stays the only place that does I/O for it (ARCHITECTURE.md
/// invariant 26).
#[test]
fn a_dialect_knows_no_store_signer_port_or_clock() {
    let deps = deps_of("imprint-nrf91");
    assert!(deps.iter().any(|d| d == "imprint-proto"), "the dialect implements imprint-proto's DeviceSession: {deps:?}");
    for d in &deps {
        assert!(!FORBIDDEN.contains(&d.as_str()), "imprint-nrf91 depends on {d}");
        assert!(
            !["imprint-store", "imprint-core", "imprint-signer", "imprint-serial", "imprint-station", "ring", "rcgen", "p256"]
                .contains(&d.as_str()),
            "imprint-nrf91 depends on {d}: a dialect decides, the driver does"
        );
    }
    let dir = format!("{}/../crates/imprint-nrf91/src", env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for io in ["std::fs", "std::net", "std::time", "std::thread", "std::process", "Instant", "SystemTime", "std::env"] {
            assert!(!text.contains(io), "{} uses {io}: a dialect does no I/O and reads no clock", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "no sources found in {dir}");
}
