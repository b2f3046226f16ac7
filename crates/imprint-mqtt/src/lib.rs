//! MQTT for the station: prove the broker is reachable (health check with a
//! publish/receive round trip) and publish provisioning events at QoS 1.
//!
//! Transport is plain TCP (`mqtt://`), TLS (`mqtts://`), or mutual TLS when
//! a client certificate and key are configured. TLS is rustls with the ring
//! provider, configured here and handed to rumqttc as a ready `ClientConfig`
//! (no second TLS stack, no aws-lc). MQTT 3.1.1 and 5 are both spoken.
//!
//! Every failure is classified ([`MqttError`]) so an operator can tell a
//! broker that is down from one whose certificate does not verify, one that
//! refuses this client, and one that is too slow.

mod client;
mod config;
mod tls;
mod verify;

pub use client::{check, publish_qos1, Endpoint, Published, Report};
pub use config::{BrokerUrl, MqttConfig, Protocol};
pub use tls::{load_certs_pem, load_key_pem, TlsMaterial};
pub use verify::{verify_client_cert, ClientCertProblem};

/// Why an MQTT operation failed, by what the operator has to fix.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// Nothing listens at the address, or it cannot be reached.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    /// The broker's certificate does not verify against the configured CA.
    #[error("TLS verification failed: {0}")]
    TlsVerification(String),
    /// The broker refused this client: bad credentials, not authorized, or
    /// its client certificate was rejected.
    #[error("refused by the broker: {0}")]
    Refused(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The configuration (URL, certificate or key files) is unusable.
    #[error("MQTT configuration: {0}")]
    Config(String),
    /// Anything else the broker or the link did.
    #[error("MQTT: {0}")]
    Other(String),
}

impl MqttError {
    /// Stable machine code: `unreachable`, `tls_verification`, `refused`,
    /// `timeout`, `config`, `other`.
    pub fn code(&self) -> &'static str {
        match self {
            MqttError::Unreachable(_) => "unreachable",
            MqttError::TlsVerification(_) => "tls_verification",
            MqttError::Refused(_) => "refused",
            MqttError::Timeout(_) => "timeout",
            MqttError::Config(_) => "config",
            MqttError::Other(_) => "other",
        }
    }
}

/// A random hex string of `n` bytes (client ids, probe payloads).
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(b)
}
