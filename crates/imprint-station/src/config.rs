//! Station configuration: embedded defaults, then the operator's file in the
//! OS config dir, then environment overrides (for tests and scripts).
//! Parsed and validated once. The file holds no secrets: every key of the
//! parsed TOML (all tables, nested, inline, arrays of tables) is checked by
//! NAME (`pin`, `password`, `pin-value`, `secret`, AWS credentials ...: see
//! [`imprint_core::secrets`]), the signer URI by attribute name, and a
//! pasted PEM block anywhere is refused. No error echoes a value or quotes
//! a line of the file: it gives the line, column and key path.

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
    /// The CA signer: an RFC 7512 `pkcs11:` URI (HSM), an
    /// `awskms:key-id=...;region=...` URI (AWS KMS), or `dev:<dir>`
    /// (development CA). Empty: the development CA under `data_dir/dev-ca`.
    /// Never a PIN or credential: use `pin-source`, `IMPRINT_PKCS11_PIN`, the
    /// PIN prompt, or the AWS credential chain.
    pub signer: String,
    /// While the signer is unreachable: "refuse" (default) or "defer".
    pub signer_offline: SignerOffline,
    /// PEM file: the issuing CA certificate first, then any intermediates up
    /// to the root. Empty: `data_dir/ca-chain.pem`.
    pub ca_chain: PathBuf,
    /// Health turns amber (warn, with the date) this many days before the
    /// CA chain expires; an expired or not yet valid CA is red and refused.
    pub ca_expiry_warn_days: u32,
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
    /// Sign-in: idle lock, lockout after wrong PINs, the demo admin, the
    /// headless station's service operator.
    pub operators: OperatorsConfig,
    /// CRLs (`imprint crl generate`): how long each one is valid.
    pub crl: CrlConfig,
    /// The QA sampling plan (`imprint qa due`).
    pub qa: QaConfig,
    /// Rework authorisations (`imprint rework authorise`): how long one is valid.
    pub rework: ReworkConfig,
    /// The Prometheus metrics endpoint (off unless `listen` is set).
    pub metrics: MetricsConfig,
    /// Backups: the age recipient they are encrypted to, and the schedule.
    pub backup: BackupConfig,
    /// Work orders: whether a device may be provisioned without one.
    pub work_orders: WorkOrdersConfig,
    /// `[[dialects]]`: which device dialect a port speaks (docs/drivers.md).
    /// The first rule that matches a port decides; no rule: the Imprint protocol.
    pub dialects: Vec<DialectRule>,
    /// The `[nrf91]` section: where the nRF91 dialect puts credentials.
    pub nrf91: Nrf91Settings,
}

/// One `[[dialects]]` rule: a port matching every field given speaks `dialect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectRule {
    pub dialect: imprint_proto::DialectKind,
    /// A glob over the port path, e.g. `/dev/serial/by-id/usb-SEGGER_J-Link_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// USB vendor id, e.g. 0x1915 (Nordic) or 0x1366 (SEGGER J-Link on an nRF91 DK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<u16>,
    /// USB product id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u16>,
}

impl DialectRule {
    /// Does the port at `path` (USB ids where known) match this rule?
    pub fn matches(&self, path: &str, vid: Option<u16>, pid: Option<u16>) -> bool {
        let port_ok = self.port.as_deref().is_none_or(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(path)));
        let vid_ok = self.vid.is_none_or(|v| vid == Some(v));
        let pid_ok = self.pid.is_none_or(|v| pid == Some(v));
        port_ok && vid_ok && pid_ok
    }

    /// The rule in words, for the record.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.port {
            parts.push(format!("port {p}"));
        }
        if let Some(v) = self.vid {
            parts.push(format!("vid {v:#06x}"));
        }
        if let Some(v) = self.pid {
            parts.push(format!("pid {v:#06x}"));
        }
        parts.join(", ")
    }
}

/// The `[nrf91]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nrf91Settings {
    /// The sec_tag that takes the key, the client certificate and the CA
    /// chain (default 16842753, nRF Cloud's).
    pub sec_tag: u32,
}

impl Default for Nrf91Settings {
    fn default() -> Self {
        Nrf91Settings { sec_tag: imprint_nrf91::DEFAULT_SEC_TAG }
    }
}

impl StationConfig {
    /// The dialect the port at `path` speaks and why: the first
    /// `[[dialects]]` rule that matches it (USB ids looked up only when a
    /// rule asks for them), else the Imprint protocol.
    pub fn dialect_for(&self, path: &str) -> (imprint_proto::DialectKind, String) {
        let (vid, pid) = if self.dialects.iter().any(|r| r.vid.is_some() || r.pid.is_some()) {
            imprint_serial::list_ports(&[glob::Pattern::escape(path)], true)
                .into_iter()
                .find(|p| p.path == path)
                .map_or((None, None), |p| (p.vid, p.pid))
        } else {
            (None, None)
        };
        match self.dialects.iter().find(|r| r.matches(path, vid, pid)) {
            Some(r) => (r.dialect, format!("[[dialects]] rule {}", r.describe())),
            None => (imprint_proto::DialectKind::Imprint, "no [[dialects]] rule matches: the Imprint protocol".into()),
        }
    }
}

/// The `[rework]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReworkConfig {
    /// A rework authorisation expires this many hours after it is given
    /// (1 to 720) if no device used it. Default 24.
    pub authorisation_hours: u32,
}

impl Default for ReworkConfig {
    fn default() -> Self {
        ReworkConfig { authorisation_hours: 24 }
    }
}

/// The `[metrics]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve `/metrics` on, e.g. `127.0.0.1:9464`. Empty or
    /// absent: no endpoint. Keep it on loopback unless a scraper on another
    /// host needs it (the numbers say how much the line produced).
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address to listen on, when the endpoint is on.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        match self.listen.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| "metrics.listen must be an IP address and port, e.g. 127.0.0.1:9464".to_string()),
        }
    }
}

/// The `[backup]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// An age public key (`age1...`): backups are encrypted to it and only
    /// its identity (kept off the station) decrypts them. Absent: backups
    /// are written unencrypted (0600) and `imprint backup` says so.
    pub recipient: Option<String>,
    /// Take a backup every this many minutes while the station runs (0: never).
    pub interval_minutes: u32,
    /// Where scheduled backups go. Empty: `<data dir>/backups`.
    pub dir: PathBuf,
    /// Scheduled backups kept (the oldest beyond this are deleted). At least 1.
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { recipient: None, interval_minutes: 0, dir: PathBuf::new(), keep: 7 }
    }
}

/// The `[work_orders]` section (docs/work-orders.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkOrdersConfig {
    /// A device is provisioned only under a scanned work order (refused
    /// `work_order_required` before it is touched otherwise). Default false:
    /// without a work order nothing is counted (the development run).
    pub required: bool,
    /// With `[central]`: the quantity asked for at a time (default 50).
    pub lease_block: i64,
    /// Ask for the next block when this station holds this many or fewer (default 10).
    pub lease_low_water: i64,
    /// A lease is valid this long, then what is left goes back (default 8 hours).
    pub lease_ttl_seconds: i64,
    /// A device whose work order's leases are used up waits this long for
    /// the next block (sync rounds) before it fails `quota_exhausted` (default 10 s).
    pub lease_wait_ms: u64,
}

impl Default for WorkOrdersConfig {
    fn default() -> Self {
        let p = imprint_sync::LeasePolicy::default();
        WorkOrdersConfig {
            required: false,
            lease_block: p.lease_block,
            lease_low_water: p.lease_low_water,
            lease_ttl_seconds: p.lease_ttl_seconds,
            lease_wait_ms: 10_000,
        }
    }
}

impl WorkOrdersConfig {
    /// The sync worker's lease policy.
    pub fn lease_policy(&self) -> imprint_sync::LeasePolicy {
        imprint_sync::LeasePolicy {
            lease_block: self.lease_block,
            lease_low_water: self.lease_low_water,
            lease_ttl_seconds: self.lease_ttl_seconds,
        }
    }
}

/// The `[crl]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrlConfig {
    /// nextUpdate = thisUpdate + this many hours (1 to 8760): publish a new
    /// CRL before then. Default 168 (a week).
    pub next_update_hours: u32,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig { next_update_hours: 168 }
    }
}

/// The `[qa]` section: how many devices of each work order QA verifies.
/// Set one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QaConfig {
    /// Every Nth device (the 1st, the N+1st, ...): ceil(provisioned / N) verifications.
    pub sample_every: Option<u32>,
    /// This many devices per work order (all of them if it has fewer).
    pub sample_count: Option<u32>,
}

/// The `[operators]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// Sign the operator out after this many minutes without a command
    /// (attempts running continue; nothing new starts). 0: never.
    pub idle_lock_minutes: u32,
    /// This many wrong PINs in a row lock the operator ...
    pub lockout_after: u32,
    /// ... for this many minutes.
    pub lockout_minutes: u32,
    /// With the development CA, sign in a demo admin automatically (the
    /// title bar says so). Never with a production CA.
    pub demo_admin: bool,
    /// The operator the headless station (`imprint station`/`watch`) runs
    /// as when no `--operator` is given: an enabled operator; it gets
    /// technician rights whatever its role.
    pub service_operator: Option<String>,
}

impl Default for OperatorsConfig {
    fn default() -> Self {
        OperatorsConfig { idle_lock_minutes: 15, lockout_after: 5, lockout_minutes: 15, demo_admin: true, service_operator: None }
    }
}

impl Default for StationConfig {
    fn default() -> Self {
        let data_dir = default_data_dir();
        StationConfig {
            data_dir,
            signer: String::new(),
            signer_offline: SignerOffline::Refuse,
            ca_chain: PathBuf::new(),
            ca_expiry_warn_days: 30,
            baud: 115_200,
            port_globs: vec!["/dev/serial/by-id/*".into()],
            system_ports: false,
            mode: Mode::Auto,
            batch: None,
            station_id: hostname(),
            profile: Profile::default(),
            central: None,
            mqtt: None,
            operators: OperatorsConfig::default(),
            crl: CrlConfig::default(),
            qa: QaConfig::default(),
            rework: ReworkConfig::default(),
            metrics: MetricsConfig::default(),
            backup: BackupConfig::default(),
            work_orders: WorkOrdersConfig::default(),
            dialects: Vec::new(),
            nrf91: Nrf91Settings::default(),
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
    project_dirs().map(|d| d.data_dir().to_path_buf()).unwrap_or_else(|| PathBuf::from(".imprint"))
}

/// The operator's config file (e.g. ~/.config/imprint/station.toml).
pub fn default_config_path() -> PathBuf {
    project_dirs().map(|d| d.config_dir().join("station.toml")).unwrap_or_else(|| PathBuf::from("station.toml"))
}

/// Where a configuration value came from, so an error blames the right place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The operator's config file.
    File(PathBuf),
    /// An environment override (`IMPRINT_SIGNER`, ...).
    Env(&'static str),
    /// The built-in defaults (no config file).
    Defaults,
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigOrigin::File(p) => write!(f, "config file {}", p.display()),
            ConfigOrigin::Env(v) => write!(f, "environment variable {v}"),
            ConfigOrigin::Defaults => f.write_str("the built-in default configuration"),
        }
    }
}

/// Why the configuration could not be loaded. Messages never hold a value
/// from the file or the environment.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Shown in the message, so not also a `source()` (printed once).
    #[error("cannot read config {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{origin} is invalid: {message}")]
    Invalid { origin: ConfigOrigin, message: String },
}

/// What to do instead of writing a secret into the configuration.
const SECRET_HELP: &str = "PINs, passwords and credentials never go in the config file. \
     Use a pin-source file in the signer URI, the IMPRINT_PKCS11_PIN variable or the PIN prompt; \
     central.password_file or IMPRINT_PG_PASSWORD for the central database; \
     or the standard AWS credential chain (environment, profile, instance role) for a KMS signer";

/// A key path as messages show it: `mqtt.client_key`, `x[2].pin`.
fn join_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare { key.to_string() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Walk every key of the parsed file: a key that names a secret, or a string
/// that holds a PEM block, is refused by its key path; the value is never
/// part of the message.
fn refuse_secrets(v: &toml::Value, path: &str) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = join_key(path, k);
                if let Some(word) = imprint_core::secrets::secret_word(k) {
                    return Err(format!("{here}: a {word} is refused. {SECRET_HELP}"));
                }
                refuse_secrets(v, &here)?;
            }
            Ok(())
        }
        toml::Value::Array(a) => a.iter().enumerate().try_for_each(|(i, v)| refuse_secrets(v, &format!("{path}[{i}]"))),
        toml::Value::String(s) if ["pkcs11:", "awskms:"].iter().any(|p| s.trim_start().starts_with(p)) => {
            check_signer(s).map_err(|m| format!("{path}: {m}"))
        }
        toml::Value::String(s) if imprint_core::secrets::looks_like_key_material(s) && s.contains("-----BEGIN") => Err(format!(
            "{path} holds key or certificate material (a PEM block), not a path: put it in a file (mode 0600) and give the file's path"
        )),
        _ => Ok(()),
    }
}

/// A TOML error as line, column and key path, without the source line that
/// toml's own message quotes (it may hold a secret) and without any value.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut at = String::new();
    if let Some(span) = e.span() {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        at = format!("line {line}, column {col}");
        if let Some(key) = key_at_line(text, line) {
            if let Some(word) = imprint_core::secrets::secret_word(key.rsplit('.').next().unwrap_or(&key)) {
                return format!("{at} ({key}): a {word} is refused. {SECRET_HELP}");
            }
            at = format!("{at} ({key})");
        } else {
            // `pin: 1234` (not TOML): still refused by the name it starts with.
            let head = text.lines().nth(line - 1).unwrap_or_default().trim().split([':', ' ', '\t']).next().unwrap_or_default();
            if let Some(word) = imprint_core::secrets::secret_word(head) {
                return format!("{at}: a {word} is refused. {SECRET_HELP}");
            }
        }
        at.push_str(": ");
    }
    format!("{at}{}", without_values(e.message()))
}

/// The key path of the `key = ...` on a 1-based line: the last `[table]`
/// header above it and the key before `=`. Only text that looks like a key
/// (no value) is returned.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let keyish = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '"' | '\'' | ' '));
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?.trim();
    let mut table = String::new();
    for l in lines.iter().take(line - 1).rev() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            let h = h.split(']').next().unwrap_or_default().trim();
            if keyish(h) {
                table = h.replace(' ', "");
            }
            break;
        }
    }
    if this.starts_with('[') {
        let h = this.trim_start_matches('[').split(']').next().unwrap_or_default().trim();
        return keyish(h).then(|| h.replace(' ', ""));
    }
    let (k, _) = this.split_once('=')?;
    let k = k.trim();
    if !keyish(k) {
        return None;
    }
    let k = k.replace(' ', "");
    Some(if table.is_empty() { k } else { format!("{table}.{k}") })
}

/// serde's messages quote values ("invalid type: string \"x\", expected
/// u32", "unknown variant `x`"): keep what was expected, drop what was found.
fn without_values(msg: &str) -> String {
    let msg = msg.trim();
    for prefix in ["invalid type: ", "invalid value: ", "invalid length ", "unknown variant "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let kind = if prefix == "invalid type: " { rest.split([' ', ',', '`', '"']).next().unwrap_or_default() } else { "" };
            let expected = rest.find(", expected").map(|i| &rest[i..]).unwrap_or_default();
            let head = prefix.trim_end_matches([' ', ':']);
            return if kind.is_empty() { format!("{head}{expected}") } else { format!("{head}: {kind}{expected}") };
        }
    }
    msg.to_string()
}

impl StationConfig {
    /// Defaults, overlaid with the file at `path` (or the default config
    /// path, if it exists), then env: IMPRINT_DATA_DIR, IMPRINT_SIGNER,
    /// IMPRINT_CA_CHAIN, IMPRINT_BAUD, IMPRINT_BATCH, IMPRINT_SIGNER_OFFLINE.
    /// An error names where the bad value came from (the file, the
    /// variable, or the defaults) and never shows the value.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = path.is_some();
        let path = path.map(Path::to_path_buf).unwrap_or_else(default_config_path);
        let (mut cfg, origin) = if path.exists() {
            let origin = ConfigOrigin::File(path.clone());
            let text = std::fs::read_to_string(&path).map_err(|cause| ConfigError::Read { path: path.clone(), cause })?;
            let cfg = Self::parse(&text).map_err(|message| ConfigError::Invalid { origin: origin.clone(), message })?;
            (cfg, origin)
        } else if explicit {
            return Err(ConfigError::Read { path: path.clone(), cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file") });
        } else {
            (StationConfig::default(), ConfigOrigin::Defaults)
        };
        cfg.validate().map_err(|message| ConfigError::Invalid { origin: origin.clone(), message })?;
        let env_err = |var: &'static str, message: String| ConfigError::Invalid { origin: ConfigOrigin::Env(var), message };
        if let Ok(v) = std::env::var("IMPRINT_DATA_DIR") {
            cfg.data_dir = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_SIGNER") {
            check_signer(&v).map_err(|m| env_err("IMPRINT_SIGNER", m))?;
            cfg.signer = v;
        }
        if let Ok(v) = std::env::var("IMPRINT_CA_CHAIN") {
            cfg.ca_chain = PathBuf::from(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_BAUD") {
            cfg.baud = v
                .trim()
                .parse()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| env_err("IMPRINT_BAUD", "not a positive number of bits per second".into()))?;
        }
        if let Ok(v) = std::env::var("IMPRINT_BATCH") {
            cfg.batch = Some(v);
        }
        if let Ok(v) = std::env::var("IMPRINT_SIGNER_OFFLINE") {
            cfg.signer_offline = match v.as_str() {
                "refuse" => SignerOffline::Refuse,
                "defer" => SignerOffline::Defer,
                _ => return Err(env_err("IMPRINT_SIGNER_OFFLINE", "use refuse or defer".into())),
            };
        }
        cfg.validate().map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(cfg)
    }

    /// The config as the operator's file (no secrets: there are none to write).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    /// Parse the operator's file: TOML syntax, then every key checked for
    /// secrets by name, then the settings. Errors give line, column and key
    /// path, never a value or a line of the file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e| toml_error(text, &e))?;
        refuse_secrets(&toml::Value::Table(table), "")?;
        toml::from_str(text).map_err(|e| toml_error(text, &e))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.baud == 0 {
            return Err("baud must be positive".into());
        }
        if self.profile.validity_days == 0 {
            return Err("profile.validity_days must be positive".into());
        }
        let ceiling = imprint_core::issuance::MAX_VALIDITY_DAYS_CEILING;
        if self.profile.max_validity_days == 0 || self.profile.max_validity_days > ceiling {
            return Err(format!("profile.max_validity_days must be 1 to {ceiling}"));
        }
        if self.profile.validity_days > self.profile.max_validity_days {
            return Err(format!(
                "profile.validity_days is {}, more than this profile allows (max_validity_days = {}): \
                 choose at most {} days, or have an admin raise max_validity_days in the config file",
                self.profile.validity_days, self.profile.max_validity_days, self.profile.max_validity_days
            ));
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
                    return Err(
                        "central.password_file does not name a file: it holds the path of a file with the password, never the password"
                            .into(),
                    );
                }
            }
            if let Some(p) = &c.supervisor_password_file {
                if !p.is_file() {
                    return Err("central.supervisor_password_file does not name a file: it holds the path of a file with the \
                                supervisor role's password, never the password"
                        .into());
                }
            }
        }
        if let Some(m) = &self.mqtt {
            m.validate()?;
        }
        self.work_orders.lease_policy().validate()?;
        if self.work_orders.lease_wait_ms > 600_000 {
            return Err("work_orders.lease_wait_ms must be at most 600000 (10 minutes)".into());
        }
        if !(1..=8760).contains(&self.crl.next_update_hours) {
            return Err("crl.next_update_hours must be 1 to 8760 (a year)".into());
        }
        if !(1..=720).contains(&self.rework.authorisation_hours) {
            return Err("rework.authorisation_hours must be 1 to 720 (30 days)".into());
        }
        self.metrics.addr()?;
        for r in &self.dialects {
            if r.port.is_none() && r.vid.is_none() && r.pid.is_none() {
                return Err("a [[dialects]] rule needs port, vid or pid: a rule without one would match every port".into());
            }
            if let Some(g) = &r.port {
                glob::Pattern::new(g).map_err(|e| format!("[[dialects]] port {g:?} is not a glob: {e}"))?;
            }
        }
        if self.backup.keep == 0 {
            return Err("backup.keep must be at least 1".into());
        }
        if let Some(r) = self.backup.recipient.as_deref() {
            if !r.trim().starts_with("age1") {
                return Err("backup.recipient must be an age public key (age1...), never an identity".into());
            }
        }
        check_signer(&self.signer)?;
        Ok(())
    }

    /// Where scheduled backups go.
    pub fn backup_dir(&self) -> PathBuf {
        if self.backup.dir.as_os_str().is_empty() {
            self.data_dir.join("backups")
        } else {
            self.backup.dir.clone()
        }
    }

    /// The signer URI in effect. Safe to show: `validate` refuses a URI
    /// with a secret-bearing attribute.
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

/// The signer URI refused by the name of a secret-bearing attribute (any
/// spelling, any part of the URI), the value never shown.
fn check_signer(uri: &str) -> Result<(), String> {
    match imprint_signer::secret_attribute(uri) {
        None => Ok(()),
        Some(word) => Err(format!("the signer URI carries a {word} attribute: {SECRET_HELP}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
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
    fn work_orders_are_optional_by_default_and_required_when_the_config_says_so() {
        assert!(!StationConfig::default().work_orders.required, "the development run provisions without a work order");
        let c = StationConfig::parse("[work_orders]\nrequired = true\n").unwrap();
        assert!(c.work_orders.required);
        assert!(StationConfig::parse("[work_orders]\nrequire = true\n").is_err(), "unknown keys are refused");
        let c = StationConfig::parse("[work_orders]\nlease_block = 20\nlease_low_water = 5\nlease_ttl_seconds = 60\n").unwrap();
        assert_eq!((c.work_orders.lease_block, c.work_orders.lease_low_water, c.work_orders.lease_ttl_seconds), (20, 5, 60));
        assert_eq!(StationConfig::default().work_orders.lease_block, 50, "blocks of 50 by default");
        let c = StationConfig::parse("[work_orders]\nlease_block = 10\nlease_low_water = 10\n").unwrap();
        assert!(c.validate().unwrap_err().contains("lease_low_water"), "the low-water mark is below the block");
    }

    #[test]
    fn written_config_reads_back_the_same() {
        let mut c = StationConfig { batch: Some("WO-9".into()), ..StationConfig::default() };
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

    const V: &str = "S3CR3T-4711";

    /// The secrets matrix for the file: every spelling, refused by key name,
    /// the value never in the message.
    #[test]
    fn secret_keys_are_refused_by_name_in_every_spelling_and_never_echoed() {
        for text in [
            "pin = \"S3CR3T-4711\"\n",
            "pin  = \"S3CR3T-4711\"\n",
            "pin\t=\t\"S3CR3T-4711\"\n",
            "PIN = \"S3CR3T-4711\"\n",
            "Pin_Value = \"S3CR3T-4711\"\n",
            "pin-value = \"S3CR3T-4711\"\n",
            "\"pin\" = \"S3CR3T-4711\"\n",
            "'pin-value' = \"S3CR3T-4711\"\n",
            "\"pin%2Dvalue\" = \"S3CR3T-4711\"\n",
            "password = \"S3CR3T-4711\"\n",
            "Password = \"S3CR3T-4711\"\n",
            "passwd = \"S3CR3T-4711\"\n",
            "secret = \"S3CR3T-4711\"\n",
            "secret_access_key = \"S3CR3T-4711\"\n",
            "aws_secret_access_key = \"S3CR3T-4711\"\n",
            "AWS_ACCESS_KEY_ID = \"S3CR3T-4711\"\n",
            "access-key = \"S3CR3T-4711\"\n",
            "session-token = \"S3CR3T-4711\"\n",
            "aws_session_token = \"S3CR3T-4711\"\n",
            "private_key = \"S3CR3T-4711\"\n",
            "[profile]\npin = \"S3CR3T-4711\"\n",
            "[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"S3CR3T-4711\"\n",
            "[central]\nurl = \"postgres://a@b/c\"\nPassword = \"S3CR3T-4711\"\n",
            "[central.tls]\nprivate-key = \"S3CR3T-4711\"\n",
            "mqtt = { url = \"mqtt://h:1\", password = \"S3CR3T-4711\" }\n",
            "[x]\ny = { z = { pin = \"S3CR3T-4711\" } }\n",
            "[[tokens]]\nlabel = \"a\"\n[[tokens]]\npin = \"S3CR3T-4711\"\n",
            "list = [{ a = 1 }, { secret = \"S3CR3T-4711\" }]\n",
            "profile.pin = \"S3CR3T-4711\"\n",
            "pin = 47114711\n",
            "pin = \"\"\"\nS3CR3T-4711\n\"\"\"\n",
            // Broken TOML on the secret's own line: the line is never quoted.
            "pin = S3CR3T-4711\n",
            "pin  = \"S3CR3T-4711\n",
            "[mqtt]\npassword = S3CR3T-4711 x\n",
            "pin: S3CR3T-4711\n",
            "baud = 1\nPassword:S3CR3T-4711\n",
        ] {
            let e = StationConfig::parse(text).expect_err(text);
            assert!(!e.contains(V) && !e.contains("4711"), "{text:?}: {e}");
            assert!(e.contains("is refused") && e.contains("never go in the config file"), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_refusal_names_the_key_path() {
        let e = StationConfig::parse("[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"S3CR3T-4711\"\n").unwrap_err();
        assert!(e.starts_with("mqtt.password: a password is refused"), "{e}");
        let e = StationConfig::parse("[[tokens]]\nlabel = \"a\"\n[[tokens]]\npin = \"x\"\n").unwrap_err();
        assert!(e.starts_with("tokens[1].pin: a pin is refused"), "{e}");
        let e = StationConfig::parse("[x]\ny = { z = { \"Pin Value\" = 1 } }\n").unwrap_err();
        assert!(e.starts_with("x.y.z.\"Pin Value\": a pin-value is refused"), "{e}");
    }

    /// A comment may mention a password; a pin-source under /run/secrets is
    /// where a PIN belongs; words inside values are not keys.
    #[test]
    fn comments_and_values_that_mention_secrets_are_fine() {
        let c = StationConfig::parse(
            "# the PIN and the password come from /run/secrets, never from here\n\
             signer = \"pkcs11:token=ca;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/secrets/imprint-pin\" # pin-source!\n\
             batch = \"password-reset-batch\"\n\
             [profile]\n# secret = 1\nname = \"secret-sensor\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.signer.contains("pin-source=file:/run/secrets/imprint-pin"));
        assert_eq!(c.batch.as_deref(), Some("password-reset-batch"));
    }

    #[test]
    fn a_signer_uri_with_a_secret_attribute_is_refused_in_any_spelling() {
        for uri in [
            "pkcs11:token=a?pin-value=S3CR3T-4711",
            "pkcs11:token=a?pin%2Dvalue=S3CR3T-4711",
            "pkcs11:token=a?PIN-Value=S3CR3T-4711",
            "pkcs11:token=a;pin-value=S3CR3T-4711",
            "pkcs11:token=a?pin:S3CR3T-4711",
            "awskms:key-id=k;aws_secret_access_key=S3CR3T-4711",
            "awskms:key-id=k;session-token=S3CR3T-4711",
        ] {
            let e = StationConfig::parse(&format!("signer = {uri:?}\n")).and_then(|c| c.validate()).expect_err(uri);
            assert!(!e.contains(V) && e.contains("never go in the config file"), "{uri}: {e}");
            let c = StationConfig { signer: uri.into(), ..StationConfig::default() };
            let e = c.validate().expect_err(uri);
            assert!(!e.contains(V), "{uri}: {e}");
        }
    }

    #[test]
    fn pem_material_anywhere_in_the_file_is_refused_unechoed() {
        let text = "[mqtt]\nurl = \"mqtts://h:8883\"\nclient_key = \"\"\"\n-----BEGIN PRIVATE KEY-----\nMIGHAgEAS3CR3T4711\n-----END PRIVATE KEY-----\n\"\"\"\n";
        let e = StationConfig::parse(text).unwrap_err();
        assert!(e.starts_with("mqtt.client_key holds key or certificate material"), "{e}");
        assert!(!e.contains("S3CR3T") && !e.contains("MIGHAgEA"), "{e}");
    }

    /// toml's own messages quote the offending line: ours give line, column
    /// and key path, and drop values from serde's messages.
    #[test]
    fn parse_errors_give_line_column_and_key_path_but_no_value() {
        let e = StationConfig::parse("baud = 9600\n[profile]\nvalidity_days = \"S3CR3T-4711\"\n").unwrap_err();
        assert!(e.starts_with("line 3, column 17 (profile.validity_days): invalid type: string, expected"), "{e}");
        assert!(!e.contains(V), "{e}");
        let e = StationConfig::parse("signer_offline = \"S3CR3T-4711\"\n").unwrap_err();
        assert!(e.contains("(signer_offline)") && e.contains("unknown variant") && !e.contains(V), "{e}");
        let e = StationConfig::parse("batch = \"S3CR3T-4711\nbaud = 1\n").unwrap_err();
        assert!(e.starts_with("line 1,") && !e.contains(V), "{e}");
        let e = StationConfig::parse("bauds = 1\n").unwrap_err();
        assert!(e.contains("unknown field `bauds`"), "{e}");
    }

    #[test]
    fn signer_doc_names_every_scheme() {
        let src = include_str!("config.rs");
        let doc = src.split("pub signer: String").next().unwrap();
        let doc = &doc[doc.rfind("pub data_dir").unwrap()..];
        for scheme in ["pkcs11:", "awskms:", "dev:"] {
            assert!(doc.contains(scheme), "the signer field's doc omits {scheme}");
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
    fn crl_next_update_hours_defaults_to_a_week_and_is_bounded() {
        assert_eq!(StationConfig::default().crl.next_update_hours, 168);
        let c = StationConfig::parse("[crl]\nnext_update_hours = 24\n").unwrap();
        assert_eq!(c.crl.next_update_hours, 24);
        let c = StationConfig { crl: CrlConfig { next_update_hours: 0 }, ..StationConfig::default() };
        assert!(c.validate().unwrap_err().contains("crl.next_update_hours"));
        assert!(StationConfig::parse("[crl]\nnext_update = 1\n").is_err());
    }

    #[test]
    fn metrics_are_off_by_default_and_listen_must_be_an_address() {
        assert_eq!(StationConfig::default().metrics.addr().unwrap(), None);
        let c = StationConfig::parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics.addr().unwrap(), Some("127.0.0.1:9464".parse().unwrap()));
        let c = StationConfig::parse("[metrics]\nlisten = \"localhost\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("metrics.listen"));
    }

    #[test]
    fn a_backup_recipient_is_an_age_public_key_never_an_identity() {
        let c = StationConfig::parse("[backup]\nrecipient = \"age1qqqq\"\ninterval_minutes = 60\nkeep = 3\n").unwrap();
        c.validate().unwrap();
        assert_eq!((c.backup.interval_minutes, c.backup.keep), (60, 3));
        let c = StationConfig::parse("[backup]\nrecipient = \"AGE-SECRET-KEY-1QQQQ\"\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("never an identity") && !e.contains("QQQQ"), "{e}");
        assert!(StationConfig { backup: BackupConfig { keep: 0, ..BackupConfig::default() }, ..StationConfig::default() }
            .validate()
            .is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(StationConfig::parse("bauds = 1").is_err());
    }
}
