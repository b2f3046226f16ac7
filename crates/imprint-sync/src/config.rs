//! The `[central]` section of the station configuration, and how it becomes
//! connection options. The password is never in the file: it comes from
//! `password_file` (a path) or the `IMPRINT_PG_PASSWORD` environment variable.

use crate::SyncError;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::path::PathBuf;
use std::str::FromStr;

/// Environment variable holding the central database password.
pub const PASSWORD_ENV: &str = "IMPRINT_PG_PASSWORD";

/// Where and how a station syncs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CentralConfig {
    /// `postgres://role@host:port/database`, without a password (refused if present).
    pub url: String,
    /// `disable | allow | prefer | require | verify-ca | verify-full`. Default:
    /// the URL's `sslmode` if it names one, else `verify-full`.
    pub sslmode: Option<String>,
    /// PEM file with the CA certificate(s) that signed the server's certificate.
    pub sslrootcert: Option<PathBuf>,
    /// File holding the station role's password (one line). `IMPRINT_PG_PASSWORD` wins if set.
    pub password_file: Option<PathBuf>,
    /// The station's login role; overrides the user in `url`.
    pub role: Option<String>,
    /// Outbox rows read per batch (one statement per record kind per batch).
    pub batch_size: u32,
    /// Connections to the center: 1, or 2 to send a share of each batch's
    /// steps over a second connection at the same time.
    pub connections: u32,
    /// Pause between rounds when the outbox is empty.
    pub interval_ms: u64,
    /// Backoff after a failure: from `retry_min_ms` doubling up to `retry_max_ms`, with jitter.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// Give up connecting (and on any one statement) after this long.
    pub timeout_ms: u64,
    /// The login role supervisors manage work orders through at the center
    /// (a member of `imprint_supervisor`: `imprint db add-supervisor`; never
    /// the station's role, which the center refuses). None: work orders
    /// cannot be created, changed or closed from this station.
    pub supervisor_role: Option<String>,
    /// File holding `supervisor_role`'s password (one line).
    /// `IMPRINT_SUPERVISOR_PG_PASSWORD` wins if set.
    pub supervisor_password_file: Option<PathBuf>,
}

/// Environment variable holding the supervisor role's password.
pub const SUPERVISOR_PASSWORD_ENV: &str = "IMPRINT_SUPERVISOR_PG_PASSWORD";

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            url: String::new(),
            sslmode: None,
            sslrootcert: None,
            password_file: None,
            role: None,
            batch_size: 8000,
            connections: 2,
            interval_ms: 2000,
            retry_min_ms: 500,
            retry_max_ms: 30_000,
            timeout_ms: 15_000,
            supervisor_role: None,
            supervisor_password_file: None,
        }
    }
}

/// True if a `postgres://user:password@host` URL carries a password.
pub fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else { return false };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let in_userinfo = match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    };
    in_userinfo || url.to_ascii_lowercase().contains("password=")
}

impl CentralConfig {
    /// A config for `url` with defaults otherwise.
    pub fn new(url: impl Into<String>) -> Self {
        CentralConfig { url: url.into(), ..Default::default() }
    }

    /// Check what can be checked without connecting. Messages never echo a value.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("central.url is empty".into());
        }
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err("central.url must start with postgres://".into());
        }
        if url_has_password(&self.url) {
            return Err("central.url carries a password: put it in central.password_file or IMPRINT_PG_PASSWORD".into());
        }
        if let Some(m) = &self.sslmode {
            PgSslMode::from_str(m)
                .map_err(|_| format!("central.sslmode {m:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"))?;
        }
        if self.batch_size == 0 || self.batch_size > 20_000 {
            return Err("central.batch_size must be between 1 and 20000".into());
        }
        if !(1..=2).contains(&self.connections) {
            return Err("central.connections must be 1 or 2".into());
        }
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err("central.retry_min_ms must be positive and at most retry_max_ms".into());
        }
        Ok(())
    }

    /// The effective TLS mode.
    pub fn ssl_mode(&self) -> Result<PgSslMode, SyncError> {
        let from_url =
            self.url.split_once('?').and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("sslmode="))).map(str::to_string);
        let mode = self.sslmode.clone().or(from_url).unwrap_or_else(|| "verify-full".into());
        PgSslMode::from_str(&mode).map_err(|_| SyncError::Config(format!("unknown sslmode {mode:?}")))
    }

    fn password(&self) -> Result<Option<String>, SyncError> {
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(Some(p));
        }
        match &self.password_file {
            None => Ok(None),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SyncError::Config(format!("central.password_file {} is not readable: {}", path.display(), e.kind())))?;
                Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
            }
        }
    }

    /// Connection options for supervisors' work order changes: the same
    /// server and TLS settings, as `supervisor_role` with its own password.
    pub fn supervisor_options(&self) -> Result<PgConnectOptions, SyncError> {
        let role = self.supervisor_role.as_deref().filter(|r| !r.trim().is_empty()).ok_or_else(|| {
            SyncError::Config(
                "work orders are managed at the center and central.supervisor_role is not set \
                 (an administrator creates one: imprint db add-supervisor)"
                    .into(),
            )
        })?;
        let password = match (std::env::var(SUPERVISOR_PASSWORD_ENV), &self.supervisor_password_file) {
            (Ok(p), _) => Some(p),
            (Err(_), None) => None,
            (Err(_), Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    SyncError::Config(format!("central.supervisor_password_file {} is not readable: {}", path.display(), e.kind()))
                })?;
                Some(text.trim_end_matches(['\r', '\n']).to_string())
            }
        };
        let station = CentralConfig { role: Some(role.to_string()), password_file: None, ..self.clone() };
        station.validate().map_err(SyncError::Config)?;
        let mut o = PgConnectOptions::from_str(&self.url)
            .map_err(|_| SyncError::Config("central.url is not a valid postgres:// URL".into()))?
            .ssl_mode(self.ssl_mode()?)
            .application_name("imprint-work-orders")
            .username(role);
        if let Some(ca) = &self.sslrootcert {
            o = o.ssl_root_cert(ca);
        }
        if let Some(p) = password {
            o = o.password(&p);
        }
        Ok(o)
    }

    /// Connection options: URL, then TLS settings, role and password from here.
    pub fn connect_options(&self) -> Result<PgConnectOptions, SyncError> {
        self.validate().map_err(SyncError::Config)?;
        let mut o = PgConnectOptions::from_str(&self.url)
            .map_err(|_| SyncError::Config("central.url is not a valid postgres:// URL".into()))?
            .ssl_mode(self.ssl_mode()?)
            .application_name("imprint-sync");
        if let Some(ca) = &self.sslrootcert {
            o = o.ssl_root_cert(ca);
        }
        if let Some(r) = &self.role {
            o = o.username(r);
        }
        if let Some(p) = self.password()? {
            o = o.password(&p);
        }
        Ok(o)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        for url in ["postgres://st:hunter2@db/imprint", "postgres://st@db/imprint?password=hunter2"] {
            let e = CentralConfig::new(url).validate().unwrap_err();
            assert!(e.contains("carries a password") && !e.contains("hunter2"), "{e}");
        }
        assert!(CentralConfig::new("postgres://st@db:5432/imprint?sslmode=require").validate().is_ok());
        assert!(!url_has_password("postgres://db/imprint"));
    }

    #[test]
    fn sslmode_defaults_to_verify_full_unless_set() {
        assert!(matches!(CentralConfig::new("postgres://s@db/x").ssl_mode().unwrap(), PgSslMode::VerifyFull));
        assert!(matches!(CentralConfig::new("postgres://s@db/x?sslmode=disable").ssl_mode().unwrap(), PgSslMode::Disable));
        let c = CentralConfig { sslmode: Some("require".into()), ..CentralConfig::new("postgres://s@db/x?sslmode=disable") };
        assert!(matches!(c.ssl_mode().unwrap(), PgSslMode::Require));
        assert!(CentralConfig { sslmode: Some("bogus".into()), ..CentralConfig::new("postgres://s@db/x") }.validate().is_err());
    }

    #[test]
    fn a_missing_password_file_is_reported_by_path_only() {
        let c = CentralConfig { password_file: Some("/nonexistent/pw".into()), ..CentralConfig::new("postgres://s@db/x") };
        let e = c.connect_options().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pw") && e.contains("not readable"), "{e}");
    }
}
