//! The `[mqtt]` section of the station config: where the broker is and which
//! files hold the TLS material. Paths only: never key material or passwords.

use crate::MqttError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// The broker the station talks to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` (plain TCP) or `mqtts://host:port` (TLS).
    pub url: String,
    /// PEM file: the CA the broker trusts for clients (the station's device
    /// CA). Also used to verify the broker unless `server_ca` is set.
    pub ca_bundle: Option<PathBuf>,
    /// PEM file: the CA that signed the broker's own certificate, when it is
    /// not the `ca_bundle` CA. Written to devices for the CONNECT check.
    pub server_ca: Option<PathBuf>,
    /// PEM file: the station's client certificate (mTLS), chain after it.
    pub client_cert: Option<PathBuf>,
    /// PEM file: the station's client key (PKCS#8, SEC1 or PKCS#1).
    pub client_key: Option<PathBuf>,
    /// "3.1.1" or "5".
    pub protocol: Protocol,
    /// Topic the provisioning events go to (QoS 1).
    pub events_topic: String,
    /// Topic prefix for the health check's round trip.
    pub health_topic: String,
    /// Ask each device to connect to the broker (protocol verb CONNECT).
    pub device_check: bool,
    /// Topic devices use for their CONNECT check.
    pub device_topic: String,
    /// Deadline for one connect + round trip, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            ca_bundle: None,
            server_ca: None,
            client_cert: None,
            client_key: None,
            protocol: Protocol::V311,
            events_topic: "imprint/events".into(),
            health_topic: "imprint/health".into(),
            device_check: false,
            device_topic: "imprint/devices".into(),
            timeout_ms: 5_000,
        }
    }
}

impl MqttConfig {
    /// A config for `url` with defaults for the rest.
    pub fn new(url: &str) -> Self {
        MqttConfig { url: url.into(), ..MqttConfig::default() }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(100))
    }

    /// The parsed broker URL.
    pub fn broker(&self) -> Result<BrokerUrl, MqttError> {
        BrokerUrl::parse(&self.url)
    }

    /// The CA file that verifies the broker's certificate.
    pub fn server_ca_path(&self) -> Option<&PathBuf> {
        self.server_ca.as_ref().or(self.ca_bundle.as_ref())
    }

    /// Check the section without touching the network.
    pub fn validate(&self) -> Result<(), String> {
        let b = self.broker().map_err(|e| e.to_string())?;
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("mqtt.client_cert and mqtt.client_key go together".into());
        }
        if b.tls && self.server_ca_path().is_none() {
            return Err("mqtts:// needs mqtt.ca_bundle (or mqtt.server_ca) to verify the broker".into());
        }
        if !b.tls && self.client_cert.is_some() {
            return Err("a client certificate needs mqtts://".into());
        }
        for (name, p) in [
            ("ca_bundle", &self.ca_bundle),
            ("server_ca", &self.server_ca),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(p) = p {
                if looks_like_key_material(&p.to_string_lossy()) {
                    // A key pasted where its path goes: never echoed.
                    return Err(format!(
                        "mqtt.{name} holds key or certificate material, not a path: \
                         put it in a file (mode 0600) and give the file's path"
                    ));
                }
                if !p.is_file() {
                    return Err(format!("mqtt.{name} does not name a file: {}", p.display()));
                }
            }
        }
        if self.events_topic.is_empty() || self.events_topic.contains(['#', '+']) {
            return Err("mqtt.events_topic must be a topic name without wildcards".into());
        }
        Ok(())
    }
}

/// True when a path-valued setting holds key or certificate material (a
/// pasted PEM block or a long base64 run) instead of a path. The same rule
/// as `imprint_core::secrets::looks_like_key_material` (this crate does not
/// depend on the core).
fn looks_like_key_material(value: &str) -> bool {
    if value.contains("-----BEGIN") || value.contains("PRIVATE KEY") || value.contains('\n') {
        return true;
    }
    value.len() >= 64 && !value.contains('/') && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '=' | ' ' | '\r'))
}

/// `mqtt://host:port` or `mqtts://host:port`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, MqttError> {
        let bad = |why: &str| MqttError::Config(format!("broker URL {url:?}: {why}"));
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad("use mqtt://host:port or mqtts://host:port"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(bad("credentials do not go in the URL"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().map_err(|_| bad("port is not a number"))?),
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(BrokerUrl { host: host.into(), port, tls })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_refuse_credentials() {
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1:1883").unwrap(), BrokerUrl { host: "127.0.0.1".into(), port: 1883, tls: false });
        assert_eq!(BrokerUrl::parse("mqtts://broker.example").unwrap().port, 8883);
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://user:pw@x:1").is_err());
        assert!(BrokerUrl::parse("mqtt://x:port").is_err());
    }

    /// An inline private key pasted into client_key was printed in full.
    #[test]
    fn a_key_pasted_into_client_key_is_refused_without_echoing_it() {
        for key in [
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEAS3CR3T4711\n-----END PRIVATE KEY-----\n",
            "-----BEGIN EC PRIVATE KEY----- MHcCAQEEIS3CR3T4711 -----END EC PRIVATE KEY-----",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgS3CR3T4711S3CR3T4711S3CR3T4711",
        ] {
            let c = MqttConfig {
                client_cert: Some("/etc/hostname".into()),
                client_key: Some(key.into()),
                ca_bundle: Some("/etc/hostname".into()),
                ..MqttConfig::new("mqtts://127.0.0.1:8883")
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains("mqtt.client_key holds key or certificate material"), "{e}");
            assert!(!e.contains("S3CR3T") && !e.contains("MIGHAgEA"), "{e}");
        }
    }

    #[test]
    fn tls_needs_a_ca_and_a_client_cert_needs_its_key() {
        assert!(MqttConfig::new("mqtts://x:8883").validate().unwrap_err().contains("ca_bundle"));
        let c = MqttConfig { client_cert: Some("/nonexistent".into()), ..MqttConfig::new("mqtt://x:1") };
        assert!(c.validate().unwrap_err().contains("go together"));
        MqttConfig::new("mqtt://127.0.0.1:1883").validate().unwrap();
    }
}
