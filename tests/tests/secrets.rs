//! Secrets and files, tried as an attacker would: every spelling of a PIN,
//! password or credential in the config file, the environment and the signer
//! URI is refused by its key or attribute NAME, and the value never appears
//! in the library's error, the `imprint` CLI's output, the Settings
//! validation path or the JSON logs. Files the station writes are private
//! (dirs 0700, files 0600) with a umask of 022. A pin-source under
//! `/run/secrets`-style paths works against SoftHSM.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_station::StationConfig;
use imprint_tests::station::{imprint_bin, TestStation};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The secret every case plants: it must show up nowhere.
const SECRET: &str = "S3CR3T-4711";

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Run `imprint` with umask 022 (the files it makes must be private anyway).
fn imprint(ts: &TestStation, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 022; exec \"$0\" \"$@\"").arg(imprint_bin()).args(args);
    cmd.envs(ts.admin_env()).env_remove("IMPRINT_SIGNER").env_remove("IMPRINT_PKCS11_PIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Every file under `dir` (recursively) that holds the secret.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_holding(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            out.push(p);
        }
    }
    out
}

/// The config file variants: top-level, spacing, case, quoting,
/// percent-encoding, nested, inline and array tables, the signer URI in
/// path and query form, a key pasted where a path goes, broken TOML.
fn config_matrix() -> Vec<String> {
    let s = SECRET;
    let mut v: Vec<String> = [
        format!("pin = \"{s}\"\n"),
        format!("pin  = \"{s}\"\n"),
        format!("pin\t=  \"{s}\"\n"),
        format!("PIN = \"{s}\"\n"),
        format!("Pin-Value = \"{s}\"\n"),
        format!("pin_value = \"{s}\"\n"),
        format!("\"pin\" = \"{s}\"\n"),
        format!("'pin-value' = \"{s}\"\n"),
        format!("\"pin%2Dvalue\" = \"{s}\"\n"),
        format!("password = \"{s}\"\n"),
        format!("PassWord = \"{s}\"\n"),
        format!("passwd = \"{s}\"\n"),
        format!("secret = \"{s}\"\n"),
        format!("secret_access_key = \"{s}\"\n"),
        format!("aws_secret_access_key = \"{s}\"\n"),
        format!("aws_access_key_id = \"{s}\"\n"),
        format!("access-key = \"{s}\"\n"),
        format!("session-token = \"{s}\"\n"),
        format!("private_key = \"{s}\"\n"),
        format!("[profile]\npin = \"{s}\"\n"),
        format!("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\npassword = \"{s}\"\n"),
        format!("[central]\nurl = \"postgres://st@db/imprint\"\npassword = \"{s}\"\n"),
        format!("mqtt = {{ url = \"mqtt://127.0.0.1:1883\", Password = \"{s}\" }}\n"),
        format!("[a]\nb = {{ c = {{ pin = \"{s}\" }} }}\n"),
        format!("[[a]]\nx = 1\n[[a]]\nsecret = \"{s}\"\n"),
        format!("profile.pin = \"{s}\"\n"),
        format!("pin = {s}\n"),
        format!("pin: {s}\n"),
        format!("password = \"{s}\n"),
        format!("signer = \"pkcs11:token=a;object=k?pin-value={s}\"\n"),
        format!("signer = \"pkcs11:token=a;object=k?pin%2Dvalue={s}\"\n"),
        format!("signer = \"pkcs11:token=a;object=k?PIN-VALUE={s}\"\n"),
        format!("signer = \"pkcs11:token=a;pin-value={s};object=k\"\n"),
        format!("signer = \"pkcs11:token=a;object=k?pin:{s}\"\n"),
        format!("signer = \"awskms:key-id=k;region=eu-west-1;aws_secret_access_key={s}\"\n"),
        format!("signer = \"awskms:key-id=k;session-token={s}\"\n"),
        format!("[mqtt]\nurl = \"mqtts://127.0.0.1:8883\"\nclient_key = \"\"\"\n-----BEGIN PRIVATE KEY-----\nMIGHAgEA{s}\n-----END PRIVATE KEY-----\n\"\"\"\n"),
    ]
    .into();
    // A value that is not a secret by name must not be echoed either.
    v.push(format!("[profile]\nvalidity_days = \"{s}\"\n"));
    v
}

/// (a) the library and (c) the Settings path: `StationConfig::parse` then
/// `validate`, as the app's save_settings does, and a config built in
/// memory (the Settings form) with a secret in the signer URI.
#[test]
fn the_library_refuses_every_spelling_without_echoing_the_value() {
    for cfg_text in config_matrix() {
        let e = StationConfig::parse(&cfg_text).and_then(|c| c.validate()).expect_err(&cfg_text);
        assert!(!e.contains(SECRET) && !e.contains("4711"), "{cfg_text:?} -> {e}");
    }
    for uri in [
        format!("pkcs11:token=a?pin-value={SECRET}"),
        format!("pkcs11:token=a?Pin%2dValue={SECRET}"),
        format!("pkcs11:token=a;pin-value={SECRET}"),
        format!("awskms:key-id=k;Aws_Secret_Access_Key={SECRET}"),
    ] {
        let c = StationConfig { signer: uri.clone(), ..StationConfig::default() };
        let e = c.validate().expect_err(&uri);
        assert!(!e.contains(SECRET) && e.contains("never go in the config file"), "{uri}: {e}");
        // The opened signer refuses it too, by name, unechoed.
        let e = imprint_signer::open_signer(&uri, None).err().unwrap().to_string();
        assert!(!e.contains(SECRET), "{uri}: {e}");
        assert!(!imprint_signer::display_uri(&uri).contains(SECRET));
    }
}

/// (b) the CLI's output and (d) the JSON logs: every variant of the file,
/// then the same URIs through IMPRINT_SIGNER and `ca init --signer`.
#[test]
fn the_cli_refuses_every_spelling_and_neither_output_nor_logs_hold_the_value() {
    for cfg_text in config_matrix() {
        let ts = TestStation::new();
        std::fs::write(ts.dir.path().join("station.toml"), &cfg_text).unwrap();
        let o = imprint(&ts, &[], &["health", "--json"]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cfg_text:?}: {out}");
        assert!(!out.contains(SECRET) && !out.contains("4711"), "{cfg_text:?}: {out}");
        assert!(out.contains("config file"), "the file is blamed: {out}");
        assert!(files_holding(&ts.cfg.data_dir, SECRET).is_empty(), "{cfg_text:?}");
    }
    for uri in [
        format!("pkcs11:token=a;object=k?pin-value={SECRET}"),
        format!("pkcs11:token=a;object=k?pin%2Dvalue={SECRET}"),
        format!("pkcs11:token=a;pin-value={SECRET};object=k"),
        format!("pkcs11:token=a;object=k?pin:{SECRET}"),
        format!("awskms:key-id=k;region=eu-west-1;AWS_ACCESS_KEY_ID={SECRET}"),
    ] {
        let ts = TestStation::new();
        let o = imprint(&ts, &[("IMPRINT_SIGNER", &uri)], &["health"]);
        assert_eq!(o.status.code(), Some(2), "{uri}: {}", text(&o));
        let out = text(&o);
        assert!(!out.contains(SECRET), "{uri}: {out}");
        assert!(out.contains("environment variable IMPRINT_SIGNER"), "an env value is not blamed on the file: {out}");
        let o = imprint(&ts, &[], &["ca", "init", "--signer", &uri]);
        assert_ne!(o.status.code(), Some(0), "{uri}: {}", text(&o));
        assert!(!text(&o).contains(SECRET), "{uri}: {}", text(&o));
        assert!(files_holding(ts.dir.path(), SECRET).is_empty(), "{uri}");
    }
}

/// A station that runs (development CA), then fails to open a bad signer:
/// the logs it wrote hold no secret from the URI it was given, and each
/// cause is printed once ("signer URI is invalid: X: signer URI is invalid: X").
#[test]
fn signer_errors_are_printed_once_and_logs_stay_clean() {
    let ts = TestStation::new();
    let o = imprint(&ts, &[], &["station", "--simulate", "1", "--max", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let uri = "pkcs11:token=a;object=k?module-path=/nonexistent/libS3CR3T.so";
    let env = [("IMPRINT_SIGNER", uri), ("IMPRINT_PKCS11_PIN", "1234")];
    let o = imprint(&ts, &env, &["provision", "--port", "/nonexistent/port"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.matches("does not exist").count(), 1, "each cause once: {err}");
    assert_eq!(err.matches("signer URI is invalid").count(), 1, "{err}");
    let o = imprint(&ts, &env[1..], &["ca", "import", "--signer", uri, "--chain", ts.cfg.ca_chain_path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.matches("signer URI is invalid").count(), 1, "{err}");
    let logs = std::fs::read_dir(ts.cfg.log_dir()).unwrap().count();
    assert!(logs > 0, "the station run wrote JSON logs");
    assert!(files_holding(&ts.cfg.log_dir(), SECRET).is_empty());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// With umask 022 the data dir, the log dir, the store and its WAL files,
/// the logs, the CA chain, the development CA and the CSV export used to be
/// world-readable.
#[test]
fn a_station_run_with_umask_022_leaves_only_private_files() {
    let ts = TestStation::new();
    let o = imprint(&ts, &[], &["station", "--simulate", "2", "--max", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let csv = ts.cfg.data_dir.join("export.csv");
    let o = imprint(&ts, &[], &["export", "csv", "--out", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let d = &ts.cfg.data_dir;
    for dir in [d.clone(), ts.cfg.log_dir(), d.join("dev-ca")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let mut files = vec![ts.cfg.store_path(), ts.cfg.ca_chain_path(), d.join("dev-ca/dev-ca-key.pem"), csv];
    for f in ["station.db-wal", "station.db-shm"] {
        if d.join(f).exists() {
            files.push(d.join(f));
        }
    }
    let logs: Vec<PathBuf> = std::fs::read_dir(ts.cfg.log_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!logs.is_empty());
    files.extend(logs);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // Widened by hand, tightened by the next run.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(ts.cfg.store_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(ts.cfg.ca_chain_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = imprint(&ts, &[], &["station", "--simulate", "1", "--max", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!((mode(d), mode(&ts.cfg.store_path()), mode(&ts.cfg.ca_chain_path())), (0o700, 0o600, 0o600));
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "47114711";

/// `pin-source=file:/run/secrets/imprint-pin` was refused because the path
/// says "secret" (and the message told the operator to use pin-source).
#[test]
fn a_pin_source_under_a_secrets_dir_works_with_softhsm() {
    assert!(Path::new(MODULE).exists(), "SoftHSM2 is not installed: run scripts/setup");
    let ts = TestStation::new();
    let hsm = tempfile::tempdir().unwrap();
    let tokens = hsm.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = hsm.path().join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display())).unwrap();
    let o = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "secrets-ca", "--so-pin", "5678", "--pin", PIN])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secrets = hsm.path().join("run/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let pin_file = secrets.join("imprint-pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uri = format!("pkcs11:token=secrets-ca;object=imprint-ca?module-path={MODULE}&pin-source=file:{}", pin_file.display());
    assert!(uri.contains("/run/secrets/imprint-pin"));
    // In the config file, the way an operator writes it.
    std::fs::write(ts.dir.path().join("station.toml"), format!("port_globs = []\nstation_id = \"test-station\"\nsigner = {uri:?}\n"))
        .unwrap();
    let conf_env = conf.display().to_string();
    let env = [("SOFTHSM2_CONF", conf_env.as_str())];
    let o = imprint(&ts, &env, &["ca", "init", "--signer", &uri, "--generate-key", "--cn", "Secrets Test CA"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = imprint(&ts, &env, &["health", "--json"]);
    let out = text(&o);
    assert!(!out.contains(PIN), "{out}");
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(h["signer"]["state"], "ok", "{h}");
    assert_eq!(h["signer"]["kind"], "pkcs11", "{h}");
    assert!(h["signer"]["uri"].as_str().unwrap().contains("pin-source=file:"), "{h}");
    // A real run on the HSM key: the JSON logs show the URI (with its
    // pin-source path) and never the PIN.
    // (A device on its own pty: the station refuses simulated devices of its
    // own while a production CA signs.)
    let dev = imprint_tests::station::sim("SECRETS-0001", "");
    let o = imprint(&ts, &env, &["provision", "--port", &imprint_tests::station::path_of(&dev)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains(PIN), "{}", text(&o));
    assert!(!files_holding(&ts.cfg.log_dir(), "pin-source=file:").is_empty(), "the opened signer's URI is logged");
    assert!(files_holding(ts.dir.path(), PIN).is_empty(), "the PIN is in no file of the station");
}
