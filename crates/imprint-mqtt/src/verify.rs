//! What the broker will see: would a broker that trusts a CA bundle accept a
//! certificate as a TLS client certificate? Checked on the station right
//! after issuance, before the certificate goes to the device.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a broker would refuse a client certificate.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientCertProblem {
    #[error("the certificate does not parse: {0}")]
    Parse(String),
    #[error("the certificate is not valid yet (notBefore {0})")]
    NotYetValid(String),
    #[error("the certificate has expired (notAfter {0})")]
    Expired(String),
    #[error("its extended key usage does not allow TLS client authentication (clientAuth)")]
    NoClientAuth,
    #[error("it does not chain to a CA in the broker's CA bundle: {0}")]
    Untrusted(String),
}

impl ClientCertProblem {
    /// Stable code for records.
    pub fn code(&self) -> &'static str {
        match self {
            ClientCertProblem::Parse(_) => "cert_unparsable",
            ClientCertProblem::NotYetValid(_) => "cert_not_yet_valid",
            ClientCertProblem::Expired(_) => "cert_expired",
            ClientCertProblem::NoClientAuth => "cert_no_client_auth",
            ClientCertProblem::Untrusted(_) => "cert_untrusted_by_broker",
        }
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ClientCertProblem> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| ClientCertProblem::Parse(e.to_string()))
}

/// Check `cert_der` as a broker trusting `trusted` (DER CA certificates)
/// would, with `intermediates` presented alongside it: valid at `now_unix`,
/// EKU allows clientAuth (or has no EKU), and a chain of verifying
/// signatures up to a trusted certificate.
pub fn verify_client_cert(cert_der: &[u8], intermediates: &[Vec<u8>], trusted: &[Vec<u8>], now_unix: i64) -> Result<(), ClientCertProblem> {
    let leaf = parse(cert_der)?;
    let v = leaf.validity();
    if v.not_before.timestamp() > now_unix {
        return Err(ClientCertProblem::NotYetValid(v.not_before.to_string()));
    }
    if v.not_after.timestamp() < now_unix {
        return Err(ClientCertProblem::Expired(v.not_after.to_string()));
    }
    match leaf.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.client_auth || eku.value.any) => return Err(ClientCertProblem::NoClientAuth),
        Ok(_) => {}
        Err(e) => return Err(ClientCertProblem::Parse(format!("extended key usage: {e}"))),
    }
    let trusted: Vec<X509Certificate<'_>> = trusted.iter().filter_map(|d| parse(d).ok()).collect();
    let inter: Vec<X509Certificate<'_>> = intermediates.iter().filter_map(|d| parse(d).ok()).collect();
    if trusted.is_empty() {
        return Err(ClientCertProblem::Untrusted("the CA bundle holds no certificate".into()));
    }
    let mut current = leaf;
    for _ in 0..8 {
        let signed_by = |ca: &X509Certificate<'_>| {
            ca.subject().as_raw() == current.issuer().as_raw() && current.verify_signature(Some(ca.public_key())).is_ok()
        };
        if let Some(ca) = trusted.iter().find(|ca| signed_by(ca)) {
            let v = ca.validity();
            if v.not_after.timestamp() < now_unix {
                return Err(ClientCertProblem::Untrusted(format!("the trusted CA {} has expired", ca.subject())));
            }
            return Ok(());
        }
        match inter.iter().find(|ca| signed_by(ca) && ca.subject().as_raw() != current.subject().as_raw()) {
            Some(next) => current = next.clone(),
            None => {
                return Err(ClientCertProblem::Untrusted(format!(
                    "no certificate in the bundle or the chain signed {} (issuer {})",
                    current.subject(),
                    current.issuer()
                )))
            }
        }
    }
    Err(ClientCertProblem::Untrusted("the chain is longer than 8 certificates".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    struct Ca {
        der: Vec<u8>,
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Ca { der, params: p, key }
    }

    fn leaf(ca: &Ca, eku: Vec<ExtendedKeyUsagePurpose>, days: (i64, i64)) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "DEV-1");
        p.extended_key_usages = eku;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(days.0);
        p.not_after = now + time::Duration::days(days.1);
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        p.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap().der().to_vec()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_client_certificate_from_the_bundle_ca_passes() {
        let a = ca("A");
        let c = leaf(&a, vec![ExtendedKeyUsagePurpose::ClientAuth], (-1, 30));
        verify_client_cert(&c, &[], std::slice::from_ref(&a.der), now()).unwrap();
    }

    #[test]
    fn each_reason_a_broker_would_refuse_is_named() {
        let (a, b) = (ca("A"), ca("B"));
        let ok_eku = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let other_ca = leaf(&b, ok_eku.clone(), (-1, 30));
        let e = verify_client_cert(&other_ca, &[], std::slice::from_ref(&a.der), now()).unwrap_err();
        assert_eq!(e.code(), "cert_untrusted_by_broker", "{e}");
        let server_only = leaf(&a, vec![ExtendedKeyUsagePurpose::ServerAuth], (-1, 30));
        assert_eq!(
            verify_client_cert(&server_only, &[], std::slice::from_ref(&a.der), now()).unwrap_err(),
            ClientCertProblem::NoClientAuth
        );
        let expired = leaf(&a, ok_eku.clone(), (-30, -1));
        assert_eq!(verify_client_cert(&expired, &[], std::slice::from_ref(&a.der), now()).unwrap_err().code(), "cert_expired");
        let future = leaf(&a, ok_eku, (2, 30));
        assert_eq!(verify_client_cert(&future, &[], std::slice::from_ref(&a.der), now()).unwrap_err().code(), "cert_not_yet_valid");
        assert_eq!(verify_client_cert(b"junk", &[], std::slice::from_ref(&a.der), now()).unwrap_err().code(), "cert_unparsable");
    }
}
