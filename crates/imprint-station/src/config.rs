//! Station configuration: embedded defaults, then the operator's file in the
//! OS config dir, then environment overrides (for tests and scripts).
//! Parsed and validated once. The file holds no secrets: a PIN or password
//! found in it is refused.

use imprint_core::issuance::Profile;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Auto: provision whatever is plugged in. Manual: wait for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Mode {
    #[default]
    Auto,
    Manual,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one parser of a mode's name (CLI flags, the app's `--mode`, Settings).
impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "manual" => Ok(Mode::Manual),
            other => Err(format!("unknown mode {other:?}: use auto or manual")),
        }
    }
}

/// What the station does while the CA signer is unreachable (a KMS outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignerOffline {
    /// Do not start a device while the signer is known unreachable: the
    /// attempt fails at once, before the device makes a key.
    #[default]
    Refuse,
    /// Start devices anyway: the CSR is journaled, and the device's next
    /// attach (same key) gets its certificate once the signer is back.
    Defer,
}

impl SignerOffline {
    pub fn as_str(self) -> &'static str {
        match self {
            SignerOffline::Refuse => "refuse",
            SignerOffline::Defer => "defer",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StationConfig {
    /// Where the local store, the development CA and logs live.
    pub data_dir: PathBuf,
    /// The CA signer: `dev:<dir>` (development CA) or an RFC 7512 `pkcs11:` URI.
    /// Empty: the development CA under `data_dir/dev-ca`.
    pub signer: String,
    /// While the signer is unreachable: "refuse" (default) or "defer".
    pub signer_offline: SignerOffline,
    /// PEM file: the issuing CA certificate first, then any intermediates up
    /// to the root. Empty: `data_dir/ca-chain.pem`.
    pub ca_chain: PathBuf,
    /// Serial line speed (8N1).
    pub baud: u32,
    /// Extra port paths/globs to watch, e.g. `/dev/serial/by-id/*`.
    pub port_globs: Vec<String>,
    /// Also watch the OS's own serial ports (USB, PCI).
    pub system_ports: bool,
    pub mode: Mode,
    /// Work order / batch recorded on every attempt.
    pub batch: Option<String>,
    /// This station's name in records and, later, the central database.
    pub station_id: String,
    pub profile: Profile,
    /// The central PostgreSQL this station syncs its records to; absent: records stay local.
    pub central: Option<imprint_sync::CentralConfig>,
    /// The MQTT broker (health check, provisioning events, device CONNECT
    /// check); absent: no MQTT. Paths to PEM files only, never key material.
    pub mqtt: Option<imprint_mqtt::MqttConfig>,
}

impl Default for StationConfig {
    fn default() -> Self {
        let data_dir = default_data_dir();
        StationConfig {
            data_dir,
            signer: String::new(),
            signer_offline: SignerOffline::Refuse,
            ca_chain: PathBuf::new(),
            baud: 115_200,
            port_globs: vec!["/dev/serial/by-id/*".into()],
            system_ports: false,
            mode: Mode::Auto,
            batch: None,
            station_id: hostname(),
            profile: Profile::default(),
            central: None,
            mqtt: None,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "station".into())
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("dev", "Imprint", "imprint")
}

/// The OS data dir for Imprint (e.g. ~/.local/share/imprint).
pub fn default_data_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".imprint"))
}

/// The operator's config file (e.g. ~/.config/imprint/station.toml).
pub fn default_config_path() -> PathBuf {
    project_dirs()
        .map(|d| d.config_dir().join("station.toml"))
        .unwrap_or_else(|| PathBuf::from("station.toml"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

const SECRET_WORDS: &[&str] = &[
    "pin-value",
    "pin =",
    "pin=",
    "password",
    "secret",
    // AWS credentials (aws_secret_access_key is caught by "secret").
    "aws_access_key_id",
    "access-key",
    "access_key",
    "session_token",
    "session-token",
];

/// Keys that name *where* a secret is (a file path), never the secret: the
/// secret-word scan skips exactly these keys, and `validate` requires the
/// path to name an existing file (a literal password would not).
const SECRET_PATH_KEYS: &[&str] = &["password_file"];

impl StationConfig {
    /// Defaults, overlaid with the file at `path` (or the default config
    /// path, if it exists), then env: IMPRINT_DATA_DIR, IMPRINT_SIGNER,
    /// IMPRINT_CA_CHAIN, IMPRINT_BAUD, IMPRINT_BATCH, IMPRINT_SIGNER_OFFLINE.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = path.is_some();
        let path = path.map(Path::to_path_buf).unwrap_or_else(default_config_path);
        let mut cfg = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            Self::parse(&text).map_err(|message| ConfigError::Invalid { path: path.clone(), message })?
        } else if explicit {
            return Err(ConfigError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        } else {
            StationConfig::default()
        };
        if let Ok(v) = std::env::var("IMPRINT_DATA_DIR") {
            cfg.data_dir = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_SIGNER") {
            cfg.signer = v;
        }
        if let Ok(v) = std::env::var("IMPRINT_CA_CHAIN") {
            cfg.ca_chain = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_BAUD") {
            cfg.baud = v.parse().map_err(|_| ConfigError::Invalid { path: path.clone(), message: format!("IMPRINT_BAUD={v} is not a number") })?;
        }
        if let Ok(v) = std::env::var("IMPRINT_BATCH") {
            cfg.batch = Some(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_SIGNER_OFFLINE") {
            cfg.signer_offline = match v.as_str() {
                "refuse" => SignerOffline::Refuse,
                "defer" => SignerOffline::Defer,
                _ => return Err(ConfigError::Invalid { path: path.clone(), message: format!("IMPRINT_SIGNER_OFFLINE={v}: use refuse or defer") }),
            };
        }
        cfg.validate().map_err(|message| ConfigError::Invalid { path, message })?;
        Ok(cfg)
    }

    /// The config as the operator's file (no secrets: there are none to write).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lower = text.to_ascii_lowercase();
        for k in SECRET_PATH_KEYS {
            lower = lower.replace(k, "");
        }
        if let Some(w) = SECRET_WORDS.iter().find(|w| lower.contains(*w)) {
            return Err(format!(
                "it contains {w:?}: PINs, passwords and credentials never go in the config file. \
                 Use a pin-source file in the signer URI, the IMPRINT_PKCS11_PIN variable, the PIN prompt, \
                 or the standard AWS credential chain (environment, profile, instance role) for a KMS signer"
            ));
        }
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.baud == 0 {
            return Err("baud must be positive".into());
        }
        if self.profile.validity_days == 0 {
            return Err("profile.validity_days must be positive".into());
        }
        if self.profile.allowed_keys.is_empty() {
            return Err("profile.allowed_keys is empty: no device could be certified".into());
        }
        if !self.profile.allowed_keys.contains(&self.profile.device_key) {
            return Err("profile.device_key is not in profile.allowed_keys".into());
        }
        if let Some(c) = &self.central {
            c.validate()?;
            if let Some(p) = &c.password_file {
                if !p.is_file() {
                    return Err("central.password_file does not name a file: it holds the path of a file with the password, never the password".into());
                }
            }
        }
        if let Some(m) = &self.mqtt {
            m.validate()?;
        }
        if self.signer.contains("pin-value") {
            return Err("the signer URI carries pin-value: use pin-source or IMPRINT_PKCS11_PIN".into());
        }
        Ok(())
    }

    /// The signer URI in effect.
    pub fn signer_uri(&self) -> String {
        if self.signer.is_empty() {
            format!("dev:{}", self.data_dir.join("dev-ca").display())
        } else {
            self.signer.clone()
        }
    }

    pub fn ca_chain_path(&self) -> PathBuf {
        if self.ca_chain.as_os_str().is_empty() {
            self.data_dir.join("ca-chain.pem")
        } else {
            self.ca_chain.clone()
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("station.db")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    pub fn is_development(&self) -> bool {
        self.signer_uri().starts_with("dev:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_the_development_ca() {
        let c = StationConfig::default();
        assert!(c.signer_uri().starts_with("dev:"));
        assert!(c.is_development());
        assert_eq!(c.baud, 115_200);
    }

    #[test]
    fn written_config_reads_back_the_same() {
        let mut c = StationConfig::default();
        c.batch = Some("WO-9".into());
        c.profile.validity_days = 90;
        assert_eq!(StationConfig::parse(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn file_overrides_defaults() {
        let c = StationConfig::parse("baud = 9600\nbatch = \"WO-1\"\n[profile]\nvalidity_days = 30\n").unwrap();
        assert_eq!((c.baud, c.batch.as_deref(), c.profile.validity_days), (9600, Some("WO-1"), 30));
        assert_eq!(c.profile.allowed_keys, Profile::default().allowed_keys);
    }

    #[test]
    fn secrets_in_the_file_are_refused_without_echoing_them() {
        let e = StationConfig::parse("signer = \"pkcs11:token=a?pin-value=1234\"").unwrap_err();
        assert!(e.contains("never go in the config file") && !e.contains("1234"), "{e}");
        assert!(StationConfig::parse("password = \"x\"").is_err());
    }

    #[test]
    fn central_section_takes_a_password_file_path_but_never_a_password() {
        let d = tempfile::tempdir().unwrap();
        let pw = d.path().join("pg.pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let text = format!(
            "[central]\nurl = \"postgres://line1@db.example/imprint\"\nsslmode = \"verify-full\"\npassword_file = \"{}\"\nbatch_size = 1000\n",
            pw.display()
        );
        let c = StationConfig::parse(&text).unwrap();
        c.validate().unwrap();
        let central = c.central.as_ref().unwrap();
        assert_eq!((central.batch_size, central.password_file.as_deref()), (1000, Some(pw.as_path())));
        // A literal password: as a key of its own, inside the URL, or where the path goes.
        let e = StationConfig::parse("[central]\nurl = \"postgres://a@b/c\"\npassword = \"hunter2\"\n").unwrap_err();
        assert!(e.contains("never go in the config file") && !e.contains("hunter2"), "{e}");
        let c = StationConfig::parse("[central]\nurl = \"postgres://a:hunter2@b/c\"\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("carries a password") && !e.contains("hunter2"), "{e}");
        let c = StationConfig::parse("[central]\nurl = \"postgres://a@b/c\"\npassword_file = \"hunter2\"\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("does not name a file") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn mqtt_section_takes_paths_and_refuses_secrets() {
        let c = StationConfig::parse("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nprotocol = \"5\"\nevents_topic = \"f/ev\"\n").unwrap();
        c.validate().unwrap();
        let m = c.mqtt.as_ref().unwrap();
        assert_eq!((m.protocol, m.events_topic.as_str()), (imprint_mqtt::Protocol::V5, "f/ev"));
        assert!(StationConfig::parse("[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"x\"\n").is_err());
        let c = StationConfig::parse("[mqtt]\nurl = \"mqtts://h:8883\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("ca_bundle"));
    }

    #[test]
    fn aws_credentials_in_the_file_are_refused_without_echoing_them() {
        for text in [
            "signer = \"awskms:key-id=k;region=eu-west-1\"\naws_secret_access_key = \"wJalrXUtnFEMIK7MDENG\"\n",
            "aws_access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\n",
            "signer = \"awskms:key-id=k;session-token=wJalrXUtnFEMIK7MDENG\"\n",
        ] {
            let e = StationConfig::parse(text).unwrap_err();
            assert!(e.contains("credential chain"), "{e}");
            assert!(!e.contains("wJalrXUtnFEMIK7MDENG") && !e.contains("AKIAIOSFODNN7EXAMPLE"), "{e}");
        }
    }

    #[test]
    fn signer_offline_defaults_to_refuse_and_reads_defer() {
        assert_eq!(StationConfig::default().signer_offline, SignerOffline::Refuse);
        let c = StationConfig::parse("signer = \"awskms:key-id=alias/ca;region=eu-west-1\"\nsigner_offline = \"defer\"\n").unwrap();
        assert_eq!(c.signer_offline, SignerOffline::Defer);
        assert!(StationConfig::parse("signer_offline = \"later\"").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(StationConfig::parse("bauds = 1").is_err());
    }
}
