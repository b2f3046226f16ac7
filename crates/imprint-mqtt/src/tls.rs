//! rustls client configuration (ring provider) from PEM files or DER bytes.

use crate::MqttError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use std::path::Path;
use std::sync::Arc;

/// What TLS needs, in memory: the CA certificates that verify the broker and,
/// for mTLS, the client certificate chain (leaf first) and its private key.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// DER certificates trusted to sign the broker's certificate.
    pub server_roots: Vec<Vec<u8>>,
    /// DER client certificate, then its chain.
    pub client_chain: Vec<Vec<u8>>,
    /// DER client private key, with its PEM tag (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`).
    pub client_key: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("server_roots", &self.server_roots.len())
            .field("client_chain", &self.client_chain.len())
            .field("client_key", &self.client_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// All `CERTIFICATE` blocks of a PEM file, as DER.
pub fn load_certs_pem(path: &Path) -> Result<Vec<Vec<u8>>, MqttError> {
    let text = std::fs::read(path).map_err(|e| MqttError::Config(format!("{}: {e}", path.display())))?;
    let certs: Vec<Vec<u8>> = pem::parse_many(&text)
        .map_err(|e| MqttError::Config(format!("{}: not PEM: {e}", path.display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(MqttError::Config(format!("{}: no CERTIFICATE in it", path.display())));
    }
    Ok(certs)
}

/// The first private key of a PEM file, with its tag. The key is never logged.
pub fn load_key_pem(path: &Path) -> Result<(String, Vec<u8>), MqttError> {
    let text = std::fs::read(path).map_err(|e| MqttError::Config(format!("{}: {e}", path.display())))?;
    pem::parse_many(&text)
        .map_err(|_| MqttError::Config(format!("{}: not PEM", path.display())))?
        .into_iter()
        .find(|p| matches!(p.tag(), "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY"))
        .map(|p| (p.tag().to_string(), p.into_contents()))
        .ok_or_else(|| MqttError::Config(format!("{}: no private key in it", path.display())))
}

impl TlsMaterial {
    /// A rustls client config with the ring provider.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, MqttError> {
        let mut roots = rustls::RootCertStore::empty();
        for der in &self.server_roots {
            roots.add(CertificateDer::from(der.clone())).map_err(|e| MqttError::Config(format!("server CA certificate unusable: {e}")))?;
        }
        if roots.is_empty() {
            return Err(MqttError::Config("no CA certificate to verify the broker with".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let cfg = match &self.client_key {
            Some((tag, key)) if !self.client_chain.is_empty() => {
                let key: PrivateKeyDer<'static> = match tag.as_str() {
                    "EC PRIVATE KEY" => PrivateSec1KeyDer::from(key.clone()).into(),
                    "RSA PRIVATE KEY" => PrivatePkcs1KeyDer::from(key.clone()).into(),
                    _ => PrivatePkcs8KeyDer::from(key.clone()).into(),
                };
                let signer =
                    provider.key_provider.load_private_key(key).map_err(|e| MqttError::Config(format!("client key unusable: {e}")))?;
                let chain = self.client_chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
                // Deliberately no local key/certificate consistency check: the
                // broker is the judge, and its verdict is what we report.
                let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
                builder.with_client_cert_resolver(Arc::new(FixedClientCert(certified)))
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(cfg))
    }
}

/// Always presents the one configured client certificate.
#[derive(Debug)]
struct FixedClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}
