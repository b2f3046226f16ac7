//! Layering rules from ARCHITECTURE.md that a build would not catch.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

const FORBIDDEN: &[&str] = &["tauri", "rusqlite", "sqlx", "serialport", "cryptoki", "tokio", "rumqttc"];

fn deps_of(krate: &str) -> Vec<String> {
    let path = format!("{}/../crates/{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
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
