//! CA certificate building (root, intermediate CSR) and the start-up key check.
//!
//! Everything here signs through a [`Signer`], so the same code makes a root
//! with an HSM key, a KMS key or the development key. No I/O: callers read and
//! write the files.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyUsagePurpose, SerialNumber};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use crate::signer::{RcgenKey, Signer, SignerError};

/// The word a development CA's common name must contain, so nobody can
/// mistake a development root for a production one.
pub const DEVELOPMENT_MARKER: &str = "DEVELOPMENT";

/// A suitable common name for the development CA.
pub const DEVELOPMENT_CA_CN: &str = "Imprint DEVELOPMENT CA - NOT FOR PRODUCTION";

/// Why a CA certificate could not be built, loaded or checked. Messages name
/// the operator's next action where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The signer failed (PIN, token, key...). Match on the inner error.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The subject or validity asked for is not acceptable.
    #[error("invalid CA parameters: {0}")]
    InvalidParams(String),
    /// rcgen could not build the certificate or CSR.
    #[error("could not build the certificate: {0}")]
    Build(String),
    /// The bytes are not a certificate (or not PEM).
    #[error("not a valid certificate: {0}")]
    BadCertificate(String),
    /// The certificate's public key is not the signer's key.
    #[error("{0}")]
    KeyMismatch(String),
    /// The certificate is not allowed to sign certificates.
    #[error("not a usable CA certificate: {0}")]
    NotCa(String),
    /// The system random generator failed.
    #[error("random generator failed: {0}")]
    Random(String),
    /// A certificate of the CA chain has expired: nothing the CA signs would
    /// verify.
    #[error(
        "the CA certificate {subject:?} expired on {not_after} (valid {not_before} to {not_after}): \
         devices would get certificates that do not verify; install a valid chain with \
         `imprint ca import --force` (or make a new CA with `imprint ca init --force`)"
    )]
    Expired { subject: String, not_before: String, not_after: String },
    /// A certificate of the CA chain is not valid yet (or the station's clock is wrong).
    #[error(
        "the CA certificate {subject:?} is not valid until {not_before} (valid {not_before} to {not_after}): \
         check the station's clock, or install a chain that is valid now with `imprint ca import --force`"
    )]
    NotYetValid { subject: String, not_before: String, not_after: String },
    /// An existing CA chain would be replaced without `--force`.
    #[error(
        "a CA chain is already installed at {path} ({subject:?}, valid until {not_after}): \
         replacing it changes the CA this station issues under, and the signer in the config must match the new one. \
         Run again with --force to replace it (the old chain is kept beside it as a .bak file)"
    )]
    Exists { path: String, subject: String, not_after: String },
}

/// An RFC 3339 UTC text of a certificate time (seconds), e.g. `2026-11-30T05:25:05Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.unix_timestamp().to_string())
}

/// The validity of a CA chain as a whole: the window in which every
/// certificate of the chain is valid. A leaf issued under the chain verifies
/// only inside it, so a leaf's notAfter is capped at [`ChainValidity::not_after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainValidity {
    /// The latest notBefore of the chain.
    pub not_before: OffsetDateTime,
    /// The earliest notAfter of the chain.
    pub not_after: OffsetDateTime,
    /// The subject of the certificate that expires first.
    pub first_to_expire: String,
}

impl ChainValidity {
    /// Whole days left until the chain expires at `now` (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

/// The validity window of a chain (DER certificates), without judging it.
pub fn chain_validity(chain: &[Vec<u8>]) -> Result<ChainValidity, CaError> {
    let mut out: Option<ChainValidity> = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CaError::BadCertificate(format!("certificate {} of the chain does not parse: {e}", i + 1)))?;
        let nb = cert.validity().not_before.to_datetime();
        let na = cert.validity().not_after.to_datetime();
        let subject = cert.subject().to_string();
        out = Some(match out {
            None => ChainValidity { not_before: nb, not_after: na, first_to_expire: subject },
            Some(v) => ChainValidity {
                not_before: v.not_before.max(nb),
                first_to_expire: if na < v.not_after { subject } else { v.first_to_expire },
                not_after: v.not_after.min(na),
            },
        });
    }
    out.ok_or_else(|| CaError::BadCertificate("the CA chain holds no certificate".into()))
}

/// Refuse a CA chain any certificate of which is expired or not yet valid
/// at `now` ([`CaError::Expired`], [`CaError::NotYetValid`], with the
/// dates); otherwise its validity window.
pub fn check_chain_validity(chain: &[Vec<u8>], now: OffsetDateTime) -> Result<ChainValidity, CaError> {
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CaError::BadCertificate(format!("the CA certificate does not parse: {e}")))?;
        let nb = cert.validity().not_before.to_datetime();
        let na = cert.validity().not_after.to_datetime();
        let (subject, not_before, not_after) = (cert.subject().to_string(), rfc3339(nb), rfc3339(na));
        if now > na {
            return Err(CaError::Expired { subject, not_before, not_after });
        }
        if now < nb {
            return Err(CaError::NotYetValid { subject, not_before, not_after });
        }
    }
    chain_validity(chain)
}

/// The subject of a CA certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSubject {
    /// commonName, e.g. "Acme Factory Issuing CA 1".
    pub common_name: String,
    /// organizationName.
    pub organization: Option<String>,
    /// countryName, two letters (ISO 3166).
    pub country: Option<String>,
}

impl CaSubject {
    /// A subject with only a common name.
    pub fn new(common_name: impl Into<String>) -> Self {
        Self { common_name: common_name.into(), organization: None, country: None }
    }

    fn to_dn(&self) -> Result<DistinguishedName, CaError> {
        let cn = self.common_name.trim();
        if cn.is_empty() {
            return Err(CaError::InvalidParams("the CA common name is empty".into()));
        }
        let mut dn = DistinguishedName::new();
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                return Err(CaError::InvalidParams(format!("country {c:?} must be a two-letter ISO 3166 code")));
            }
            let ps = rcgen::string::PrintableString::try_from(c.to_ascii_uppercase())
                .map_err(|e| CaError::InvalidParams(format!("country {c:?}: {e}")))?;
            dn.push(DnType::CountryName, DnValue::PrintableString(ps));
        }
        if let Some(o) = &self.organization {
            if o.trim().is_empty() {
                return Err(CaError::InvalidParams("the organization is empty".into()));
            }
            dn.push(DnType::OrganizationName, o.trim());
        }
        dn.push(DnType::CommonName, cn);
        Ok(dn)
    }
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature]
}

/// A positive 16-byte serial from the OS CSPRNG (127 random bits).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| CaError::Random(e.to_string()))?;
    // Positive (high bit clear) and a nonzero first octet so the DER INTEGER
    // is exactly 16 octets.
    b[0] = (b[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&b))
}

/// Turn an rcgen error into ours, surfacing the signer's own error when rcgen
/// only reports that the remote key failed.
fn build_error(e: rcgen::Error, key: &RcgenKey<'_>) -> CaError {
    match e {
        rcgen::Error::RemoteKeyError => match key.take_error() {
            Some(se) => CaError::Signer(se),
            None => CaError::Build("the signer failed without saying why".into()),
        },
        other => CaError::Build(other.to_string()),
    }
}

/// Build and sign a self-signed root CA certificate with the signer's key and
/// return it as DER.
///
/// The certificate is a CA with path length 1 (root -> issuing CA -> devices),
/// key usages keyCertSign, cRLSign and digitalSignature, a subject key
/// identifier, a random positive 16-byte serial, and validity from one hour
/// ago (clock skew) to `validity_days` from now.
///
/// With `development` the common name must contain "DEVELOPMENT" (see
/// [`DEVELOPMENT_CA_CN`]); a development signer can only make a development
/// root.
pub fn self_signed_root(signer: &mut dyn Signer, subject: &CaSubject, validity_days: u32, development: bool) -> Result<Vec<u8>, CaError> {
    if validity_days == 0 {
        return Err(CaError::InvalidParams("validity must be at least one day".into()));
    }
    let now = OffsetDateTime::now_utc();
    self_signed_root_between(signer, subject, now - Duration::hours(1), now + Duration::days(i64::from(validity_days)), development)
}

/// [`self_signed_root`] with an explicit validity window (tests make expired
/// and not yet valid CAs with it; `not_after` must be after `not_before`).
pub fn self_signed_root_between(
    signer: &mut dyn Signer,
    subject: &CaSubject,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    development: bool,
) -> Result<Vec<u8>, CaError> {
    if not_after <= not_before {
        return Err(CaError::InvalidParams("the CA's notAfter must be after its notBefore".into()));
    }
    if development && !subject.common_name.contains(DEVELOPMENT_MARKER) {
        return Err(CaError::InvalidParams(format!(
            "a development CA's common name must contain {DEVELOPMENT_MARKER:?} \
             (e.g. {DEVELOPMENT_CA_CN:?}); got {:?}",
            subject.common_name
        )));
    }
    if !development && signer.info().development {
        return Err(CaError::InvalidParams(
            "the development signer can only make a development CA: \
             use an HSM or KMS signer for a production root"
                .into(),
        ));
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_dn()?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = ca_key_usages();
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after;

    let key = RcgenKey::new(signer)?;
    let cert = params.self_signed(&key).map_err(|e| build_error(e, &key))?;
    Ok(cert.der().to_vec())
}

/// Build a PKCS#10 CSR (DER) for an intermediate CA whose key is in `signer`,
/// for an existing root to sign. It requests CA:TRUE with path length 0 and
/// the CA key usages; the root decides what it grants.
pub fn intermediate_csr(signer: &mut dyn Signer, subject: &CaSubject) -> Result<Vec<u8>, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_dn()?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();

    let key = RcgenKey::new(signer)?;
    let csr = params.serialize_request(&key).map_err(|e| build_error(e, &key))?;
    Ok(csr.der().to_vec())
}

/// Check at start-up that `ca_cert_der` is the certificate of the key in
/// `signer`: same SubjectPublicKeyInfo (algorithm and key bits), and a CA
/// (basicConstraints CA:TRUE) allowed to sign certificates (keyCertSign).
pub fn check_ca_matches_signer(ca_cert_der: &[u8], signer: &dyn Signer) -> Result<(), CaError> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca_cert_der)
        .map_err(|e| CaError::BadCertificate(format!("the CA certificate does not parse: {e}")))?;
    let (_, signer_spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(signer.public_key_spki())
        .map_err(|e| CaError::Signer(SignerError::Failed(format!("signer public key: {e}"))))?;
    let cert_spki = cert.public_key();
    let uri = signer.info().uri;

    let same_alg = cert_spki.algorithm.algorithm == signer_spki.algorithm.algorithm
        && cert_spki.algorithm.parameters.as_ref().map(|p| p.as_bytes()) == signer_spki.algorithm.parameters.as_ref().map(|p| p.as_bytes());
    if !same_alg {
        return Err(CaError::KeyMismatch(format!(
            "the CA certificate's key algorithm ({}) is not the signer's ({}) for {uri}: \
             wrong pkcs11 object/id or awskms key-id, or the wrong CA certificate file",
            describe_alg(cert_spki),
            describe_alg(&signer_spki),
        )));
    }
    if cert_spki.subject_public_key.data != signer_spki.subject_public_key.data {
        return Err(CaError::KeyMismatch(format!(
            "the CA certificate's public key is not the key in the signer ({uri}): \
             wrong pkcs11 object/id or awskms key-id, or the wrong CA certificate file"
        )));
    }

    let subject = cert.subject().to_string();
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => {
            return Err(CaError::NotCa(format!(
                "certificate {subject:?} is not a CA (basicConstraints CA:TRUE missing): \
                 give the CA certificate, not a device or leaf certificate"
            )))
        }
        Err(e) => return Err(CaError::BadCertificate(format!("certificate {subject:?}: bad basicConstraints: {e}"))),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        Ok(_) => Err(CaError::NotCa(format!("certificate {subject:?} lacks keyUsage keyCertSign: it may not sign certificates"))),
        Err(e) => Err(CaError::BadCertificate(format!("certificate {subject:?}: bad keyUsage: {e}"))),
    }
}

fn describe_alg(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    let alg = spki.algorithm.algorithm.to_id_string();
    match spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) {
        Some(curve) => format!("{alg} {}", curve.to_id_string()),
        None => alg,
    }
}

/// Parse one or more PEM `CERTIFICATE` blocks (a chain file, leaf or
/// issuing CA first by convention) into DER certificates, in file order.
/// Any other PEM block (a private key, a CSR) is an error.
pub fn load_chain_pem(pem_text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| CaError::BadCertificate(format!("bad PEM: {e}")))?;
    if blocks.is_empty() {
        return Err(CaError::BadCertificate("no PEM CERTIFICATE block found".into()));
    }
    let mut out = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(CaError::BadCertificate(format!("PEM block {} is a {:?}, not a CERTIFICATE", i + 1, block.tag())));
        }
        let der = block.into_contents();
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::BadCertificate(format!("PEM block {} does not parse: {e}", i + 1)))?;
        out.push(der);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::signer::{SigAlg, SignerInfo};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    /// A software P-256 signer for tests.
    struct SoftSigner {
        key: EcdsaKeyPair,
        spki: Vec<u8>,
        rng: SystemRandom,
        development: bool,
        fail_with_pin_locked: bool,
    }

    impl SoftSigner {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }
            let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
            spki.extend_from_slice(key.public_key().as_ref());
            Self { key, spki, rng, development: false, fail_with_pin_locked: false }
        }
    }

    impl Signer for SoftSigner {
        fn info(&self) -> SignerInfo {
            SignerInfo { kind: "test", uri: "test:".into(), development: self.development }
        }
        fn algorithm(&self) -> SigAlg {
            SigAlg::EcdsaP256Sha256
        }
        fn public_key_spki(&self) -> &[u8] {
            &self.spki
        }
        fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
            if self.fail_with_pin_locked {
                return Err(SignerError::PinLocked("test".into()));
            }
            Ok(self.key.sign(&self.rng, msg).unwrap().as_ref().to_vec())
        }
    }

    fn subject() -> CaSubject {
        CaSubject { common_name: "Acme Factory Root CA".into(), organization: Some("Acme".into()), country: Some("de".into()) }
    }

    #[test]
    fn root_has_ca_profile_and_verifies() {
        let mut s = SoftSigner::new();
        let der = self_signed_root(&mut s, &subject(), 3650, false).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.verify_signature(None).unwrap();
        assert_eq!(cert.subject(), cert.issuer());
        assert!(cert.subject().to_string().contains("CN=Acme Factory Root CA"));
        assert!(cert.subject().to_string().contains("C=DE"));

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(1));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        assert!(!ku.key_encipherment());
        assert!(cert.extensions().iter().any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER));

        let serial = cert.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] != 0 && serial[0] & 0x80 == 0);

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert!((now - 3600 - nb).abs() < 60);
        assert!((now + 3650 * 86400 - na).abs() < 60);

        check_ca_matches_signer(&der, &s).unwrap();
    }

    #[test]
    fn serials_differ() {
        let mut s = SoftSigner::new();
        let a = self_signed_root(&mut s, &subject(), 1, false).unwrap();
        let b = self_signed_root(&mut s, &subject(), 1, false).unwrap();
        let sa = x509_parser::parse_x509_certificate(&a).unwrap().1.raw_serial().to_vec();
        let sb = x509_parser::parse_x509_certificate(&b).unwrap().1.raw_serial().to_vec();
        assert_ne!(sa, sb);
    }

    #[test]
    fn development_root_must_say_so() {
        let mut s = SoftSigner::new();
        let err = self_signed_root(&mut s, &subject(), 30, true).unwrap_err();
        assert!(matches!(err, CaError::InvalidParams(_)), "{err}");
        assert!(err.to_string().contains("DEVELOPMENT"));
        let der = self_signed_root(&mut s, &CaSubject::new(DEVELOPMENT_CA_CN), 30, true).unwrap();
        check_ca_matches_signer(&der, &s).unwrap();
    }

    #[test]
    fn development_signer_cannot_make_production_root() {
        let mut s = SoftSigner::new();
        s.development = true;
        let err = self_signed_root(&mut s, &subject(), 30, false).unwrap_err();
        assert!(matches!(err, CaError::InvalidParams(_)), "{err}");
    }

    #[test]
    fn bad_params_are_rejected() {
        let mut s = SoftSigner::new();
        assert!(self_signed_root(&mut s, &subject(), 0, false).is_err());
        assert!(self_signed_root(&mut s, &CaSubject::new("  "), 1, false).is_err());
        let mut bad_country = subject();
        bad_country.country = Some("DEU".into());
        assert!(self_signed_root(&mut s, &bad_country, 1, false).is_err());
    }

    #[test]
    fn signer_error_surfaces_through_rcgen() {
        let mut s = SoftSigner::new();
        s.fail_with_pin_locked = true;
        let err = self_signed_root(&mut s, &subject(), 30, false).unwrap_err();
        assert!(matches!(err, CaError::Signer(SignerError::PinLocked(_))), "{err:?}");
        let err = intermediate_csr(&mut s, &subject()).unwrap_err();
        assert!(matches!(err, CaError::Signer(SignerError::PinLocked(_))));
    }

    #[test]
    fn intermediate_csr_parses_and_carries_key() {
        let mut s = SoftSigner::new();
        let csr = intermediate_csr(&mut s, &CaSubject::new("Acme Issuing CA 1")).unwrap();
        // from_pem verifies the CSR's self-signature.
        let pem_text = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", csr));
        let params = rcgen::CertificateSigningRequestParams::from_pem(&pem_text).unwrap();
        assert_eq!(rcgen::PublicKeyData::der_bytes(&params.public_key), crate::signer::spki_subject_key_bits(&s.spki).unwrap());
        assert!(matches!(params.params.is_ca, IsCa::Ca(BasicConstraints::Constrained(0))));
    }

    #[test]
    fn mismatched_key_is_reported() {
        let mut a = SoftSigner::new();
        let b = SoftSigner::new();
        let der = self_signed_root(&mut a, &subject(), 30, false).unwrap();
        let err = check_ca_matches_signer(&der, &b).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch(_)));
        assert!(err.to_string().contains("not the key in the signer"), "{err}");
    }

    #[test]
    fn non_ca_certificate_is_rejected() {
        let s = SoftSigner::new();
        // A leaf certificate for the same key, signed by the key itself.
        let mut params = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        let mut s2 = s;
        let der = {
            let key = RcgenKey::new(&mut s2).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let err = check_ca_matches_signer(&der, &s2).unwrap_err();
        assert!(matches!(err, CaError::NotCa(_)), "{err}");
    }

    /// An expired CA was accepted by `ca import` and at start-up (issue 12).
    #[test]
    fn expired_and_not_yet_valid_chains_are_refused_with_their_dates() {
        let mut s = SoftSigner::new();
        let now = OffsetDateTime::now_utc();
        let expired = self_signed_root_between(&mut s, &subject(), now - Duration::days(400), now - Duration::days(1), false).unwrap();
        let err = check_chain_validity(std::slice::from_ref(&expired), now).unwrap_err();
        let na = rfc3339(x509_parser::parse_x509_certificate(&expired).unwrap().1.validity().not_after.to_datetime());
        assert!(matches!(&err, CaError::Expired { not_after, .. } if *not_after == na), "{err:?}");
        assert!(err.to_string().contains(&format!("expired on {na}")), "{err}");

        let early = self_signed_root_between(&mut s, &subject(), now + Duration::days(1), now + Duration::days(400), false).unwrap();
        let err = check_chain_validity(std::slice::from_ref(&early), now).unwrap_err();
        assert!(matches!(err, CaError::NotYetValid { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid until"), "{err}");

        // A good issuing CA under an expired root: the chain is refused too.
        let good = self_signed_root(&mut s, &subject(), 30, false).unwrap();
        assert!(matches!(check_chain_validity(&[good.clone(), expired], now), Err(CaError::Expired { .. })));
        let v = check_chain_validity(std::slice::from_ref(&good), now).unwrap();
        assert!((v.not_after - (now + Duration::days(30))).abs() < Duration::seconds(5));
        assert_eq!(v.days_left(now), 29);
    }

    #[test]
    fn chain_validity_is_the_earliest_not_after() {
        let mut s = SoftSigner::new();
        let long = self_signed_root(&mut s, &CaSubject::new("Long"), 3650, false).unwrap();
        let short = self_signed_root(&mut s, &CaSubject::new("Short"), 10, false).unwrap();
        let v = chain_validity(&[long, short]).unwrap();
        assert_eq!(v.first_to_expire, "CN=Short");
        assert_eq!(v.days_left(OffsetDateTime::now_utc()), 9);
        assert!(chain_validity(&[]).is_err());
    }

    #[test]
    fn garbage_certificate_is_rejected() {
        let s = SoftSigner::new();
        let err = check_ca_matches_signer(b"not a cert", &s).unwrap_err();
        assert!(matches!(err, CaError::BadCertificate(_)));
    }

    #[test]
    fn chain_pem_round_trip() {
        let mut s = SoftSigner::new();
        let a = self_signed_root(&mut s, &subject(), 30, false).unwrap();
        let b = self_signed_root(&mut s, &CaSubject::new("Second"), 30, false).unwrap();
        let text =
            format!("{}\n{}", pem::encode(&pem::Pem::new("CERTIFICATE", a.clone())), pem::encode(&pem::Pem::new("CERTIFICATE", b.clone())));
        assert_eq!(load_chain_pem(&text).unwrap(), vec![a, b]);
    }

    #[test]
    fn chain_pem_rejects_empty_keys_and_garbage() {
        assert!(load_chain_pem("").is_err());
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        let err = load_chain_pem(&key).unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(load_chain_pem(&junk).is_err());
    }
}
