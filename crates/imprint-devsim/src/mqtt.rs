//! CONNECT for real: the simulated device opens an mTLS connection to the
//! broker with its own key and installed certificate + chain, verifying the
//! broker with the `brokerca` object, then subscribes, publishes and waits
//! for its own message. This is the one verb that does network I/O.
//!
//! The `mqtt-*` faults change what the device presents: a certificate from
//! a CA it made itself (`mqtt-foreign-cert`), an expired certificate from
//! [`expiry_test_ca_pem`]'s CA (`mqtt-expired-cert`: a broker that trusts
//! that CA sees a certificate that chains but has expired), or its real
//! certificate with a TLS key that does not match it (`mqtt-wrong-key`).

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the device tries before it answers `reason=timeout`.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// Why the device's connection failed, as the `reason` token of ERR 424.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// `unreachable`, `tls_verification`, `refused`, `timeout` or `other`.
    pub reason: &'static str,
    pub msg: String,
}

fn err(reason: &'static str, msg: impl Into<String>) -> ConnectError {
    ConnectError { reason, msg: msg.into() }
}

/// What the device presents in the TLS handshake.
pub struct Identity {
    /// Leaf first, then its chain, DER.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER of the key that signs the handshake.
    pub key_pkcs8: Vec<u8>,
}

struct ExpiryCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn expiry_ca() -> Result<&'static ExpiryCa, String> {
    static CA: OnceLock<Result<ExpiryCa, String>> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, "Imprint simulator expiry-test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        Ok(ExpiryCa { pem: cert.pem(), params, key })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// PEM of the CA that signs the `mqtt-expired-cert` fault's certificates
/// (one per process). A test broker that trusts it sees an expired
/// certificate that otherwise chains.
pub fn expiry_test_ca_pem() -> Result<String, String> {
    expiry_ca().map(|c| c.pem.clone())
}

/// A certificate for `device_key` (subject CN = serial, clientAuth), signed
/// by `issuer`, valid `days` from now (negative: in the past).
fn cert_for(
    device_key: &impl PublicKeyData,
    serial: &str,
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    days: (i64, i64),
) -> Result<Vec<u8>, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, serial);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(days.0);
    p.not_after = now + time::Duration::days(days.1);
    Ok(p.signed_by(device_key, issuer).map_err(|e| e.to_string())?.der().to_vec())
}

/// `mqtt-foreign-cert`: a certificate for the device key from a CA the device made itself.
pub fn foreign_identity(device_key: &impl PublicKeyData, key_pkcs8: Vec<u8>, serial: &str) -> Result<Identity, String> {
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.distinguished_name.push(DnType::CommonName, "Foreign CA (simulator fault)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_der = ca.self_signed(&ca_key).map_err(|e| e.to_string())?.der().to_vec();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = cert_for(device_key, serial, &issuer, (-1, 365))?;
    Ok(Identity { chain: vec![leaf, ca_der], key_pkcs8 })
}

/// `mqtt-expired-cert`: an expired certificate for the device key from the expiry-test CA.
pub fn expired_identity(device_key: &impl PublicKeyData, key_pkcs8: Vec<u8>, serial: &str) -> Result<Identity, String> {
    let ca = expiry_ca()?;
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let leaf = cert_for(device_key, serial, &issuer, (-30, -1))?;
    Ok(Identity { chain: vec![leaf], key_pkcs8 })
}

/// `mqtt-wrong-key`: a fresh key that does not match the certificate.
pub fn unrelated_key_pkcs8() -> Result<Vec<u8>, String> {
    KeyPair::generate().map(|k| k.serialize_der()).map_err(|e| e.to_string())
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn tls_config(broker_ca: &[Vec<u8>], id: &Identity) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in broker_ca {
        roots.add(CertificateDer::from(c.clone())).map_err(|e| err("other", format!("brokerca unusable: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())))
        .map_err(|e| err("other", format!("device key unusable for TLS: {e}")))?;
    let chain = id.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    // No local key/certificate consistency check: the broker judges.
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("other", e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Fixed(certified)));
    Ok(Arc::new(cfg))
}

/// Connect over mTLS, subscribe to `topic`, publish a nonce to it and wait
/// for it. Returns the publish→receive round trip.
pub fn connect_and_round_trip(
    host: &str,
    port: u16,
    topic: &str,
    client_id: &str,
    broker_ca: &[Vec<u8>],
    id: &Identity,
) -> Result<Duration, ConnectError> {
    use rumqttc::{Event, Packet, QoS};
    let tls = tls_config(broker_ca, id)?;
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    let (client, mut conn) = rumqttc::Client::new(o, 8);
    let deadline = Instant::now() + CONNECT_BUDGET;
    let nonce = hex::encode(crate::device::random_bytes(8));
    let mut sent_at: Option<Instant> = None;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(err("timeout", format!("no round trip within {} s", CONNECT_BUDGET.as_secs())));
        }
        let ev = match conn.recv_timeout(left) {
            Err(_) => continue,
            Ok(Err(e)) => break Err(classify(e)),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce) {
                    break Err(err("other", e.to_string()));
                }
            }
            Event::Incoming(Packet::SubAck(s)) => {
                if !s.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))) {
                    break Err(err("refused", format!("subscription to {topic} not authorized")));
                }
                sent_at = Some(Instant::now());
                if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, nonce.clone().into_bytes()) {
                    break Err(err("other", e.to_string()));
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == topic && p.payload.as_ref() == nonce.as_bytes() => {
                break Ok(sent_at.map(|t| t.elapsed()).unwrap_or_default());
            }
            _ => {}
        }
    };
    let _ = client.disconnect();
    let _ = conn.recv_timeout(Duration::from_millis(100));
    result
}

fn classify(e: rumqttc::ConnectionError) -> ConnectError {
    use rumqttc::ConnectionError as E;
    let io = |io: &std::io::Error| -> ConnectError {
        use std::io::ErrorKind as K;
        if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return tls(r);
        }
        match io.kind() {
            K::ConnectionRefused | K::NotFound | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
                err("unreachable", io.to_string())
            }
            K::TimedOut => err("timeout", io.to_string()),
            K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => {
                err("refused", format!("the broker closed the connection: {io}"))
            }
            _ => err("other", io.to_string()),
        }
    };
    match e {
        E::Io(e) => io(&e),
        E::Tls(rumqttc::TlsError::Io(e)) => io(&e),
        E::Tls(rumqttc::TlsError::TLS(r)) => tls(&r),
        E::MqttState(rumqttc::StateError::Io(e)) => io(&e),
        E::MqttState(rumqttc::StateError::Deserialization(rumqttc::mqttbytes::Error::Io(e))) => io(&e),
        E::MqttState(rumqttc::StateError::ConnectionAborted) => err("refused", "the broker closed the connection"),
        E::ConnectionRefused(code) => err("refused", format!("CONNACK {code:?}")),
        E::NetworkTimeout | E::FlushTimeout => err("timeout", e.to_string()),
        other => err("other", other.to_string()),
    }
}

fn tls(r: &rustls::Error) -> ConnectError {
    match r {
        rustls::Error::InvalidCertificate(c) => err("tls_verification", format!("the broker's certificate: {c:?}")),
        rustls::Error::AlertReceived(a) => err("refused", format!("the broker rejected the device's certificate (TLS alert {a:?})")),
        other => err("other", format!("TLS: {other}")),
    }
}
