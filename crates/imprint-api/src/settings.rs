//! Settings: read, validate, save. Saving writes only what the operator
//! changed into the config file (never the command line's mode, a scanned
//! work order or the data dir), and never a secret: the central database's
//! password is a file path, the signer's PIN a `pin-source`.

use crate::{ApiError, ApiResult, ErrorCode};
use imprint_core::issuance::KeyType;
use imprint_station::{Mode, StationConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use ts_rs::TS;

/// The key type devices generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum DeviceKey {
    P256,
    P384,
}

impl From<KeyType> for DeviceKey {
    fn from(k: KeyType) -> Self {
        match k {
            KeyType::P256 => DeviceKey::P256,
            KeyType::P384 => DeviceKey::P384,
        }
    }
}

impl From<DeviceKey> for KeyType {
    fn from(k: DeviceKey) -> Self {
        match k {
            DeviceKey::P256 => KeyType::P256,
            DeviceKey::P384 => KeyType::P384,
        }
    }
}

/// `[central] sslmode`: the TLS modes the station accepts (libpq's), a
/// closed set on the wire so Settings offers exactly these (pinned against
/// the config's own validation by `every_sslmode_is_one_the_config_accepts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 6] =
        [SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull];

    /// The text in the config file (and libpq's).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn parse(s: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The `[central]` section as Settings shows it (no password: a file path).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct CentralSettings {
    /// `postgres://role@host:5432/database`, without a password.
    pub url: String,
    /// None: the URL's own sslmode, else verify-full.
    pub sslmode: Option<SslMode>,
    /// PEM file with the CA that signed the server's certificate.
    pub sslrootcert: Option<String>,
    /// File holding the station role's password.
    pub password_file: Option<String>,
}

/// What the Settings view edits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "SettingsDto")]
pub struct SettingsView {
    pub signer: String,
    pub baud: u32,
    pub port_globs: Vec<String>,
    pub system_ports: bool,
    pub mode: Mode,
    pub station_id: String,
    pub profile_name: String,
    pub validity_days: u32,
    pub organization: Option<String>,
    pub device_key: DeviceKey,
    pub lock_device: bool,
    /// None: no central database (records stay on this station).
    pub central: Option<CentralSettings>,
    /// Where Settings are saved (read-only).
    pub config_path: String,
}

fn opt(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl SettingsView {
    pub fn of(c: &StationConfig, config_path: &Path) -> SettingsView {
        SettingsView {
            signer: c.signer.clone(),
            baud: c.baud,
            port_globs: c.port_globs.clone(),
            system_ports: c.system_ports,
            mode: c.mode,
            station_id: c.station_id.clone(),
            profile_name: c.profile.name.clone(),
            validity_days: c.profile.validity_days,
            organization: c.profile.organization.clone(),
            device_key: c.profile.device_key.into(),
            lock_device: c.profile.lock_device,
            central: c.central.as_ref().map(|x| CentralSettings {
                url: x.url.clone(),
                // Validated when the config was loaded: a mode is one of these.
                sslmode: x.sslmode.as_deref().and_then(SslMode::parse),
                sslrootcert: x.sslrootcert.as_ref().map(|p| p.display().to_string()),
                password_file: x.password_file.as_ref().map(|p| p.display().to_string()),
            }),
            config_path: config_path.display().to_string(),
        }
    }

    /// `base` with these settings applied.
    fn apply(&self, base: &StationConfig) -> StationConfig {
        let mut c = base.clone();
        c.signer = self.signer.trim().to_string();
        c.baud = self.baud;
        c.port_globs = self.port_globs.iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect();
        c.system_ports = self.system_ports;
        c.mode = self.mode;
        c.station_id = self.station_id.trim().to_string();
        c.profile.name = self.profile_name.trim().to_string();
        c.profile.validity_days = self.validity_days;
        c.profile.organization = opt(&self.organization);
        c.profile.device_key = self.device_key.into();
        c.profile.lock_device = self.lock_device;
        c.central = match &self.central {
            Some(x) if !x.url.trim().is_empty() => {
                let mut central = base.central.clone().unwrap_or_default();
                central.url = x.url.trim().to_string();
                central.sslmode = x.sslmode.map(|m| m.as_str().to_string());
                central.sslrootcert = opt(&x.sslrootcert).map(PathBuf::from);
                central.password_file = opt(&x.password_file).map(PathBuf::from);
                Some(central)
            }
            _ => None,
        };
        c
    }
}

fn set(table: &mut toml::Table, key: &str, v: impl Serialize) -> ApiResult<()> {
    let v = toml::Value::try_from(v).map_err(|e| ApiError::internal(format!("encoding {key}: {e}")))?;
    table.insert(key.to_string(), v);
    Ok(())
}

fn section<'a>(root: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    let e = root.entry(name.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !e.is_table() {
        *e = toml::Value::Table(toml::Table::new());
    }
    match e {
        toml::Value::Table(t) => t,
        _ => unreachable!("replaced by a table just above"),
    }
}

/// Validate `new` against the config in effect (`current`), then write the
/// keys the operator changed into the file at `path` (others in the file are
/// kept as they are). Returns the config to run with.
pub fn save(current: &StationConfig, path: &Path, new: &SettingsView) -> ApiResult<StationConfig> {
    let applied = new.apply(current);
    applied.validate().map_err(|m| ApiError::new(ErrorCode::InvalidSettings, m))?;
    let before = SettingsView::of(current, path);
    let mut file: toml::Table = match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| ApiError::new(ErrorCode::InvalidSettings, format!("{}: {}", path.display(), e.message())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(ApiError::io(path.display(), e)),
    };
    let c = &applied;
    if new.signer.trim() != before.signer {
        set(&mut file, "signer", &c.signer)?;
    }
    if new.baud != before.baud {
        set(&mut file, "baud", c.baud)?;
    }
    if c.port_globs != before.port_globs {
        set(&mut file, "port_globs", &c.port_globs)?;
    }
    if new.system_ports != before.system_ports {
        set(&mut file, "system_ports", c.system_ports)?;
    }
    if new.mode != before.mode {
        set(&mut file, "mode", c.mode)?;
    }
    if new.station_id.trim() != before.station_id {
        set(&mut file, "station_id", &c.station_id)?;
    }
    {
        let p = &c.profile;
        let mut changes: Vec<(&str, toml::Value)> = Vec::new();
        let val = |v: &dyn erased::Ser| v.value();
        if new.profile_name.trim() != before.profile_name {
            changes.push(("name", val(&p.name)));
        }
        if new.validity_days != before.validity_days {
            changes.push(("validity_days", val(&p.validity_days)));
        }
        if opt(&new.organization) != before.organization {
            match &p.organization {
                Some(o) => changes.push(("organization", val(o))),
                None => {
                    if let Some(toml::Value::Table(t)) = file.get_mut("profile") {
                        t.remove("organization");
                    }
                }
            }
        }
        if new.device_key != before.device_key {
            changes.push(("device_key", val(&p.device_key)));
        }
        if new.lock_device != before.lock_device {
            changes.push(("lock_device", val(&p.lock_device)));
        }
        if !changes.is_empty() {
            let t = section(&mut file, "profile");
            for (k, v) in changes {
                t.insert(k.to_string(), v);
            }
        }
    }
    let central_before = before.central.clone().filter(|x| !x.url.trim().is_empty());
    let central_after = SettingsView::of(c, path).central;
    if central_after != central_before {
        match &c.central {
            None => {
                file.remove("central");
            }
            Some(x) => {
                let t = section(&mut file, "central");
                set(t, "url", &x.url)?;
                for (k, v) in [
                    ("sslmode", x.sslmode.clone()),
                    ("sslrootcert", x.sslrootcert.as_ref().map(|p| p.display().to_string())),
                    ("password_file", x.password_file.as_ref().map(|p| p.display().to_string())),
                ] {
                    match v {
                        Some(v) => set(t, k, v)?,
                        None => {
                            t.remove(k);
                        }
                    }
                }
            }
        }
    }
    let text = toml::to_string_pretty(&file).map_err(|e| ApiError::internal(format!("encoding the settings: {e}")))?;
    // What is written must load back as the config we run with.
    StationConfig::parse(&text).map_err(|m| ApiError::new(ErrorCode::InvalidSettings, m))?;
    write_private(path, &text)?;
    Ok(applied)
}

/// Write `text` to `path` atomically, readable by the owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> ApiResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApiError::io(dir.display(), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ApiError::io(tmp.display(), e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| ApiError::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| ApiError::io(path.display(), e))?;
    Ok(())
}

mod erased {
    /// A value that becomes a TOML value (for heterogeneous change lists).
    pub trait Ser {
        fn value(&self) -> toml::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> toml::Value {
            toml::Value::try_from(self).unwrap_or_else(|e| toml::Value::String(format!("<unencodable: {e}>")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed set Settings offers is exactly what `[central]` accepts:
    /// each mode validates, is sent as its config text, and the UI's list
    /// comes from the binding (the hand-written UI copy lacked `allow`).
    #[test]
    fn every_sslmode_is_one_the_config_accepts() {
        for m in SslMode::ALL {
            let c =
                imprint_sync::CentralConfig { sslmode: Some(m.as_str().into()), ..imprint_sync::CentralConfig::new("postgres://st@db/x") };
            assert!(c.validate().is_ok(), "{m:?}");
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.as_str()));
            assert_eq!(SslMode::parse(m.as_str()), Some(m));
        }
        let union = <SslMode as TS>::inline(&ts_rs::Config::default());
        assert_eq!(union.split('|').count(), SslMode::ALL.len(), "{union}");
        assert!(SslMode::parse("bogus").is_none());
    }

    #[test]
    fn saving_settings_writes_only_what_the_operator_changed() {
        // Regression: Settings saved the command line's mode, the scanned
        // work order and data_dir into station.toml.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("station.toml");
        std::fs::write(&path, "# the operator's file\nbaud = 57600\n").unwrap();
        let mut current = StationConfig::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        current.data_dir = dir.path().join("data");
        current.mode = Mode::Manual; // from the command line
        current.batch = Some("WO-7".into()); // scanned
        let mut view = SettingsView::of(&current, &path);
        view.validity_days = 30;
        view.organization = Some("Acme".into());
        let applied = save(&current, &path, &view).unwrap();
        assert_eq!(applied.profile.validity_days, 30);
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.keys().collect::<Vec<_>>(), vec!["baud", "profile"], "{text}");
        let profile = table["profile"].as_table().unwrap();
        assert_eq!(profile.keys().collect::<Vec<_>>(), vec!["organization", "validity_days"], "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn invalid_settings_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("station.toml");
        let current = StationConfig::default();
        let mut view = SettingsView::of(&current, &path);
        view.baud = 0;
        let e = save(&current, &path, &view).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidSettings);
        assert!(!path.exists());
    }

    #[test]
    fn the_central_section_round_trips_without_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("station.toml");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        let current = StationConfig::default();
        let mut view = SettingsView::of(&current, &path);
        view.central = Some(CentralSettings {
            url: "postgres://st1@db.example:5432/imprint".into(),
            sslmode: Some(SslMode::VerifyFull),
            sslrootcert: None,
            password_file: Some(pw.display().to_string()),
        });
        let applied = save(&current, &path, &view).unwrap();
        assert_eq!(applied.central.as_ref().unwrap().url, "postgres://st1@db.example:5432/imprint");
        let back = StationConfig::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.central, applied.central);
        assert_eq!(SettingsView::of(&back, &path).central, view.central);
    }
}

/// One setting as it is and as it would be (the confirmation before saving).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct SettingChange {
    /// The setting's key (`profile_name`, `central.url`, ...).
    pub key: String,
    pub before: String,
    pub after: String,
    /// Changes what certificates say, who signs them or where records go:
    /// the confirmation says so.
    pub security: bool,
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), "(none)".into());
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), if s.trim().is_empty() { "(empty)".into() } else { s.trim().to_string() });
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Settings whose change an admin confirms as security-relevant.
const SECURITY_KEYS: &[&str] = &["signer", "station_id", "profile_name", "validity_days", "organization", "device_key", "lock_device"];

/// What differs between `before` and `after`, key by key (the config path,
/// which is not a setting, excluded). Settings hold no secret, by
/// construction (a password is a file path, a PIN a `pin-source`).
pub fn changes(before: &SettingsView, after: &SettingsView) -> Vec<SettingChange> {
    let (mut a, mut b) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    flatten("", &serde_json::to_value(before).unwrap_or_default(), &mut a);
    flatten("", &serde_json::to_value(after).unwrap_or_default(), &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| k.as_str() != "config_path")
        .filter_map(|k| {
            let none = "(none)".to_string();
            let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
            (x != y).then(|| SettingChange {
                key: k.clone(),
                before: x.clone(),
                after: y.clone(),
                security: SECURITY_KEYS.contains(&k.as_str()) || k.starts_with("central"),
            })
        })
        .collect()
}

#[cfg(test)]
mod change_tests {
    use super::*;

    #[test]
    fn changes_list_each_changed_key_with_before_and_after() {
        let cfg = StationConfig::default();
        let before = SettingsView::of(&cfg, Path::new("/x/imprint.toml"));
        let mut after = before.clone();
        after.validity_days = 365;
        after.lock_device = false;
        after.baud = 9600;
        after.central = Some(CentralSettings { url: "postgres://line1@db/imprint".into(), ..Default::default() });
        let c = changes(&before, &after);
        let keys: Vec<(&str, &str, &str, bool)> =
            c.iter().map(|c| (c.key.as_str(), c.before.as_str(), c.after.as_str(), c.security)).collect();
        assert_eq!(
            keys,
            vec![
                ("baud", "115200", "9600", false),
                ("central", "(none)", "(none)", true),
                ("central.password_file", "(none)", "(none)", true),
                ("central.sslmode", "(none)", "(none)", true),
                ("central.sslrootcert", "(none)", "(none)", true),
                ("central.url", "(none)", "postgres://line1@db/imprint", true),
                ("lock_device", "true", "false", true),
                ("validity_days", "3650", "365", true),
            ]
            .into_iter()
            .filter(|(_, b, a, _)| b != a)
            .collect::<Vec<_>>()
        );
        assert!(changes(&before, &before).is_empty());
    }
}
