//! CSR checks and certificate building.
//!
//! Invariant: the subject and extensions of an issued certificate come from
//! the station's [`Profile`] and the device's identity, never from the CSR.
//! The CSR contributes exactly one thing, its public key, and only after it
//! has proved possession (signature), passed the key allow-list, matched the
//! key the device generated, and carried this session's nonce.

use crate::signer::{RcgenKey, Signer, SignerError};
use ::time::{Duration, OffsetDateTime};
use imprint_proto::FailureCode;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use x509_parser::prelude::*;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";

/// A device key type the station may certify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    P256,
    P384,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
        }
    }
}

/// No profile may allow device certificates valid longer than 30 years.
pub const MAX_VALIDITY_DAYS_CEILING: u32 = 30 * 365;

/// The certificate profile: everything an issued certificate says that is
/// not the device's serial number or public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    pub name: String,
    /// Validity of a device certificate in days (at most `max_validity_days`).
    pub validity_days: u32,
    /// The most `validity_days` may be set to (Settings cannot raise it; an
    /// admin edits the config file). At most [`MAX_VALIDITY_DAYS_CEILING`].
    pub max_validity_days: u32,
    /// notBefore is backdated this many seconds to tolerate device clock skew.
    pub backdate_secs: u32,
    /// Key types a device may present.
    pub allowed_keys: Vec<KeyType>,
    /// The key type the station asks devices to generate.
    pub device_key: KeyType,
    /// Subject O=, if any.
    pub organization: Option<String>,
    /// Put the device serial in subject serialNumber as well as CN (IEEE 802.1AR).
    pub subject_serial_number: bool,
    /// Lock the device after it passes.
    pub lock_device: bool,
    /// A certificate never outlives its CA: with `true` (the default) its
    /// notAfter is capped at the CA chain's earliest notAfter; with `false`
    /// a certificate that would outlive the CA is refused
    /// (`leaf_outlives_ca`) instead of being shortened.
    pub cap_at_ca_expiry: bool,
    /// Renewal window: a device attached whose current certificate expires
    /// within this many days gets a new certificate for its existing key
    /// (when the new one would end outside the window). 0: never renew.
    pub renew_before_days: u32,
    /// On renewal, revoke the replaced certificate (reason superseded)
    /// instead of only marking it `superseded` (still valid until it expires).
    pub revoke_on_renewal: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: "device-client".into(),
            validity_days: 3650,
            max_validity_days: 3650,
            backdate_secs: 3600,
            allowed_keys: vec![KeyType::P256, KeyType::P384],
            device_key: KeyType::P256,
            organization: None,
            subject_serial_number: true,
            lock_device: true,
            cap_at_ca_expiry: true,
            renew_before_days: 30,
            revoke_on_renewal: false,
        }
    }
}

/// What a public key is, as far as the allow-list cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ec(KeyType),
    EcOtherCurve(String),
    Rsa { bits: usize },
    Ed25519,
    Other(String),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Ec(t) => f.write_str(t.as_str()),
            KeyKind::EcOtherCurve(oid) => write!(f, "EC curve {oid}"),
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Other(oid) => write!(f, "algorithm {oid}"),
        }
    }
}

/// Classify a DER SubjectPublicKeyInfo.
pub fn key_kind(spki_der: &[u8]) -> Result<KeyKind, String> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| format!("public key is not a valid SubjectPublicKeyInfo: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the public key".into());
    }
    Ok(classify(&spki))
}

fn classify(spki: &SubjectPublicKeyInfo<'_>) -> KeyKind {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string()).unwrap_or_default();
            match curve.as_str() {
                OID_P256 => KeyKind::Ec(KeyType::P256),
                OID_P384 => KeyKind::Ec(KeyType::P384),
                other => KeyKind::EcOtherCurve(other.to_string()),
            }
        }
        OID_RSA => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(k)) => k.key_size(),
                _ => 0,
            };
            KeyKind::Rsa { bits }
        }
        OID_ED25519 => KeyKind::Ed25519,
        other => KeyKind::Other(other.to_string()),
    }
}

/// SHA-256 of a DER SubjectPublicKeyInfo, lowercase hex: the key's identity
/// in the store (unique per certificate).
pub fn spki_sha256_hex(spki_der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(spki_der))
}

/// Why a CSR was refused. Each names the lie, so QA knows what the device did.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrRefusal {
    #[error("the CSR is not valid DER: {0}")]
    Malformed(String),
    #[error("the device key is {found}, which this profile does not allow (allowed: {allowed})")]
    KeyNotAllowed { found: String, allowed: String },
    #[error("the CSR's signature does not verify: the device did not sign it with the key it names")]
    BadSignature,
    #[error("the CSR is over a different key than the one the device generated")]
    KeyMismatch,
    #[error("the CSR is not bound to this session's nonce (stale or replayed CSR)")]
    NonceMismatch,
    #[error("the CSR subject {found:?} does not match the device serial {expected:?}")]
    SubjectMismatch { expected: String, found: String },
    #[error("the CSR carries attributes besides challengePassword ({found}); the certificate profile is the station's")]
    UnexpectedAttributes { found: String },
}

impl CsrRefusal {
    /// The refusal's code in the failure catalogue.
    pub fn code(&self) -> FailureCode {
        match self {
            CsrRefusal::Malformed(_) => FailureCode::CsrMalformed,
            CsrRefusal::KeyNotAllowed { .. } => FailureCode::KeyNotAllowed,
            CsrRefusal::BadSignature => FailureCode::CsrBadSignature,
            CsrRefusal::KeyMismatch => FailureCode::CsrKeyMismatch,
            CsrRefusal::NonceMismatch => FailureCode::CsrNonceMismatch,
            CsrRefusal::SubjectMismatch { .. } => FailureCode::CsrSubjectMismatch,
            CsrRefusal::UnexpectedAttributes { .. } => FailureCode::CsrUnexpectedAttributes,
        }
    }
}

/// A CSR that passed every check; carries only what issuance may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCsr {
    pub spki_der: Vec<u8>,
    pub key_type: KeyType,
}

/// The nonce as the device must encode it in challengePassword.
pub fn nonce_challenge(nonce: &[u8]) -> String {
    hex::encode(nonce)
}

/// Check a CSR against the device and the session. The order matters for
/// clear reasons: a weak key is reported as such, not as a bad signature.
pub fn check_csr(
    csr_der: &[u8],
    device_serial: &str,
    keygen_spki_der: &[u8],
    nonce: &[u8],
    profile: &Profile,
) -> Result<CheckedCsr, CsrRefusal> {
    check_csr_bound(csr_der, device_serial, keygen_spki_der, CsrBinding::Nonce(nonce), profile)
}

/// What binds a CSR to this attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrBinding<'a> {
    /// The session nonce in challengePassword, its only attribute (docs/protocol.md 4.4).
    Nonce(&'a [u8]),
    /// No nonce: the device's attestation covers the CSR, checked by its
    /// dialect before issuance (the nRF91's KEYGEN COSE_Sign1). The CSR must
    /// then carry no attribute at all.
    Attested,
}

/// [`check_csr`] with the binding named: the same checks, with the nonce
/// check replaced by the attestation's for [`CsrBinding::Attested`].
pub fn check_csr_bound(
    csr_der: &[u8],
    device_serial: &str,
    keygen_spki_der: &[u8],
    binding: CsrBinding<'_>,
    profile: &Profile,
) -> Result<CheckedCsr, CsrRefusal> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| CsrRefusal::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrRefusal::Malformed("trailing bytes after the CSR".into()));
    }
    let info = &csr.certification_request_info;
    let kind = classify(&info.subject_pki);
    let key_type = match kind {
        KeyKind::Ec(t) if profile.allowed_keys.contains(&t) => t,
        other => {
            return Err(CsrRefusal::KeyNotAllowed {
                found: other.to_string(),
                allowed: profile.allowed_keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            })
        }
    };
    csr.verify_signature().map_err(|_| CsrRefusal::BadSignature)?;
    let spki_der = info.subject_pki.raw.to_vec();
    if spki_der != keygen_spki_der {
        return Err(CsrRefusal::KeyMismatch);
    }
    let allowed_attribute = match binding {
        CsrBinding::Nonce(nonce) => {
            let challenge = challenge_password(&csr);
            if challenge.as_deref() != Some(nonce_challenge(nonce).as_str()) {
                return Err(CsrRefusal::NonceMismatch);
            }
            Some(OID_CHALLENGE_PASSWORD)
        }
        CsrBinding::Attested => None,
    };
    let cn: Vec<String> = info.subject.iter_common_name().map(|a| a.as_str().map(str::to_string).unwrap_or_default()).collect();
    let sn: Vec<String> = info
        .subject
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .map(|a| a.as_str().map(str::to_string).unwrap_or_default())
        .collect();
    let cn_ok = cn.len() == 1 && cn[0] == device_serial;
    let sn_ok = sn.iter().all(|s| s == device_serial);
    if !cn_ok || !sn_ok {
        return Err(CsrRefusal::SubjectMismatch { expected: device_serial.to_string(), found: info.subject.to_string() });
    }
    // Exactly one attribute, challengePassword (docs/protocol.md 4.4): a CSR
    // that also asks for extensions (CA:TRUE, a SAN, serverAuth) is refused
    // rather than signed without them, so firmware that asks is found.
    let extra: Vec<String> = info
        .iter_attributes()
        .map(|a| a.oid.to_id_string())
        .filter(|oid| Some(oid.as_str()) != allowed_attribute)
        .map(|oid| if oid == "1.2.840.113549.1.9.14" { "extensionRequest".to_string() } else { oid })
        .collect();
    if !extra.is_empty() {
        return Err(CsrRefusal::UnexpectedAttributes { found: extra.join(", ") });
    }
    Ok(CheckedCsr { spki_der, key_type })
}

fn challenge_password(csr: &X509CertificationRequest<'_>) -> Option<String> {
    for attr in csr.certification_request_info.iter_attributes() {
        if attr.oid.to_id_string() != OID_CHALLENGE_PASSWORD {
            continue;
        }
        if let ParsedCriAttribute::ChallengePassword(pw) = attr.parsed_attribute() {
            return Some(pw.0.clone());
        }
        // Fall back to decoding the raw value: SET { DirectoryString }.
        let (_, any) = x509_parser::der_parser::parse_der(attr.value).ok()?;
        let inner = any.as_set().ok()?.first()?.clone();
        return inner.as_str().ok().map(str::to_string);
    }
    None
}

/// A planned certificate: everything needed to (re-)build the same TBS.
/// Journaled before the signer is called so a crash never loses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuePlan {
    pub device_serial: String,
    pub spki_der: Vec<u8>,
    /// Certificate serial, positive, 16 bytes from the OS CSPRNG.
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl IssuePlan {
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

/// A positive certificate serial of 16 bytes (127 random bits): more than
/// the 64 bits the CA/B baseline asks for, within RFC 5280's 20 octets.
pub fn random_serial() -> Result<Vec<u8>, String> {
    let mut s = [0u8; 16];
    loop {
        getrandom::fill(&mut s).map_err(|e| format!("OS random source failed: {e}"))?;
        s[0] &= 0x7f; // positive
        if s[0] != 0 {
            // no leading zero octet, so DER keeps all 16 bytes
            return Ok(s.to_vec());
        }
    }
}

/// Why no certificate could be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The OS random source failed (no serial).
    #[error("{0}")]
    Random(String),
    /// The CA chain has expired (or expires this second): nothing signed now would verify.
    #[error("the CA certificate expired on {ca_not_after}: no certificate is issued under an expired CA")]
    CaExpired { ca_not_after: String },
    /// The certificate would outlive its CA and the profile refuses to cap it.
    #[error(
        "the certificate would be valid until {leaf_not_after} but its CA expires on {ca_not_after}, \
         and the profile refuses to shorten it (cap_at_ca_expiry = false)"
    )]
    OutlivesCa { leaf_not_after: String, ca_not_after: String },
}

impl PlanError {
    /// The refusal's code in the failure catalogue.
    pub fn code(&self) -> FailureCode {
        match self {
            PlanError::Random(_) => FailureCode::PlanFailed,
            PlanError::CaExpired { .. } => FailureCode::CaExpired,
            PlanError::OutlivesCa { .. } => FailureCode::LeafOutlivesCa,
        }
    }
}

/// Plan a certificate for a checked key. A certificate never outlives its
/// CA: its notAfter is at most `ca_not_after` (the CA chain's earliest
/// notAfter, [`crate::ca::ChainValidity`]); one that would be longer is
/// capped, or refused when the profile says `cap_at_ca_expiry = false`. An
/// expired CA issues nothing.
pub fn plan(
    profile: &Profile,
    device_serial: &str,
    spki_der: &[u8],
    now: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<IssuePlan, PlanError> {
    let now = now.replace_nanosecond(0).map_err(|e| PlanError::Random(e.to_string()))?;
    if now >= ca_not_after {
        return Err(PlanError::CaExpired { ca_not_after: crate::ca::rfc3339(ca_not_after) });
    }
    let not_before = now - Duration::seconds(i64::from(profile.backdate_secs));
    let wanted = now + Duration::days(i64::from(profile.validity_days));
    let not_after = if wanted <= ca_not_after {
        wanted
    } else if profile.cap_at_ca_expiry {
        ca_not_after
    } else {
        return Err(PlanError::OutlivesCa { leaf_not_after: crate::ca::rfc3339(wanted), ca_not_after: crate::ca::rfc3339(ca_not_after) });
    };
    Ok(IssuePlan {
        device_serial: device_serial.to_string(),
        spki_der: spki_der.to_vec(),
        serial: random_serial().map_err(PlanError::Random)?,
        not_before,
        not_after,
    })
}

/// Why a certificate could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error("certificate could not be built: {0}")]
    Build(String),
}

/// Build the device certificate from the profile and sign it with the CA key.
/// `ca_cert_der` is the issuing CA's certificate (its subject and key id
/// become the issuer and the authority key identifier).
pub fn build_certificate(plan: &IssuePlan, profile: &Profile, ca_cert_der: &[u8], signer: &mut dyn Signer) -> Result<Vec<u8>, IssueError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SerialNumber};
    let subject_key =
        rcgen::SubjectPublicKeyInfo::from_der(&plan.spki_der).map_err(|e| IssueError::Build(format!("device public key: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = &profile.organization {
        dn.push(DnType::OrganizationName, o.clone());
    }
    dn.push(DnType::CommonName, plan.device_serial.clone());
    if profile.subject_serial_number {
        // X.520 serialNumber is a PrintableString; a serial outside that
        // alphabet (e.g. with '_') is carried as UTF8String instead.
        let value = match rcgen::string::PrintableString::try_from(plan.device_serial.clone()) {
            Ok(p) => rcgen::DnValue::PrintableString(p),
            Err(_) => rcgen::DnValue::Utf8String(plan.device_serial.clone()),
        };
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), value);
    }
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&plan.serial));
    params.not_before = plan.not_before;
    params.not_after = plan.not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = RcgenKey::new(signer)?;
    let issuer =
        Issuer::from_ca_cert_der(&ca_cert_der.to_vec().into(), &key).map_err(|e| IssueError::Build(format!("CA certificate: {e}")))?;
    let cert = params.signed_by(&subject_key, &issuer).map_err(|e| match key.take_error() {
        Some(se) => IssueError::Signer(se),
        None => IssueError::Build(e.to_string()),
    })?;
    Ok(cert.der().to_vec())
}

/// Verify a proof-of-possession signature (DER ECDSA) over `message` by the
/// key in `spki_der`.
pub fn verify_pop(spki_der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| format!("device public key is not valid: {e}"))?;
    let alg: &'static ring::signature::EcdsaVerificationAlgorithm = match classify(&spki) {
        KeyKind::Ec(KeyType::P256) => &ECDSA_P256_SHA256_ASN1,
        KeyKind::Ec(KeyType::P384) => &ECDSA_P384_SHA384_ASN1,
        other => return Err(format!("cannot verify a proof by a {other} key")),
    };
    UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| "the signature does not verify with the device's key".to_string())
}

/// Parse a DER certificate's serial (hex), notAfter and SPKI, for records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    pub serial_hex: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub spki_sha256: String,
    pub fingerprint_sha256: String,
}

pub fn summarize(cert_der: &[u8]) -> Result<CertSummary, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| format!("bad certificate: {e}"))?;
    Ok(CertSummary {
        serial_hex: hex::encode(cert.raw_serial()),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        spki_sha256: spki_sha256_hex(cert.public_key().raw),
        fingerprint_sha256: hex::encode(sha2::Sha256::digest(cert_der)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{SigAlg, SignerInfo};
    use rcgen::{Attribute, CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};

    struct SoftSigner(KeyPair, Vec<u8>);
    impl SoftSigner {
        fn new() -> Self {
            let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let spki = rcgen::PublicKeyData::subject_public_key_info(&k);
            SoftSigner(k, spki)
        }
    }
    impl Signer for SoftSigner {
        fn info(&self) -> SignerInfo {
            SignerInfo { kind: "test", uri: "test:".into(), development: true }
        }
        fn algorithm(&self) -> SigAlg {
            SigAlg::EcdsaP256Sha256
        }
        fn public_key_spki(&self) -> &[u8] {
            &self.1
        }
        fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
            rcgen::SigningKey::sign(&self.0, msg).map_err(|e| SignerError::Failed(e.to_string()))
        }
    }

    fn ca(signer: &SoftSigner) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "Test CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        p.self_signed(&signer.0).unwrap().der().to_vec()
    }

    fn challenge_attr(nonce: &[u8]) -> Attribute {
        // rcgen writes `values` as-is: the whole SET OF { UTF8String hex(nonce) }.
        let s = nonce_challenge(nonce);
        let mut v = vec![0x31, s.len() as u8 + 2, 0x0c, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        Attribute { oid: &[1, 2, 840, 113549, 1, 9, 7], values: v }
    }

    fn csr(key: &KeyPair, cn: &str, nonce: &[u8], ca_true: bool) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        if ca_true {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.serialize_request_with_attributes(key, vec![challenge_attr(nonce)]).unwrap().der().to_vec()
    }

    fn spki(k: &KeyPair) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(k)
    }

    const NONCE: &[u8] = &[9u8; 16];

    #[test]
    fn good_csr_passes_and_yields_device_key() {
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let c = check_csr(&csr(&k, "SN1", NONCE, false), "SN1", &spki(&k), NONCE, &Profile::default()).unwrap();
        assert_eq!(c.spki_der, spki(&k));
        assert_eq!(c.key_type, KeyType::P256);
    }

    #[test]
    fn p384_is_classified_from_the_spki_not_the_signature() {
        let k = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let c = check_csr(&csr(&k, "SN1", NONCE, false), "SN1", &spki(&k), NONCE, &Profile::default()).unwrap();
        assert_eq!(c.key_type, KeyType::P384);
        let p256_only = Profile { allowed_keys: vec![KeyType::P256], ..Profile::default() };
        let e = check_csr(&csr(&k, "SN1", NONCE, false), "SN1", &spki(&k), NONCE, &p256_only).unwrap_err();
        assert_eq!(e.code().as_str(), "key_not_allowed");
    }

    #[test]
    fn each_lie_is_named() {
        let p = Profile::default();
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let check = |der: &[u8], keygen: &[u8]| check_csr(der, "SN1", keygen, NONCE, &p).unwrap_err();
        assert_eq!(check(&csr(&k, "SN2", NONCE, false), &spki(&k)).code().as_str(), "csr_subject_mismatch");
        assert_eq!(check(&csr(&other, "SN1", NONCE, false), &spki(&k)).code().as_str(), "csr_key_mismatch");
        assert_eq!(check(&csr(&k, "SN1", &[1u8; 16], false), &spki(&k)).code().as_str(), "csr_nonce_mismatch");
        let mut bad = csr(&k, "SN1", NONCE, false);
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert_eq!(check(&bad, &spki(&k)).code().as_str(), "csr_bad_signature");
        assert_eq!(check(b"junk", &spki(&k)).code().as_str(), "csr_malformed");
    }

    /// A CSR asking for CA:TRUE (an extensionRequest) used to be signed
    /// silently without it; docs/protocol.md 4.4 now refuses it by name.
    #[test]
    fn a_csr_asking_for_ca_true_is_refused_as_csr_unexpected_attributes() {
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let e = check_csr(&csr(&k, "SN1", NONCE, true), "SN1", &spki(&k), NONCE, &Profile::default()).unwrap_err();
        assert_eq!(e.code().as_str(), "csr_unexpected_attributes");
        assert!(e.to_string().contains("extensionRequest"), "{e}");
    }

    #[test]
    fn certificate_follows_profile_not_csr() {
        let mut s = SoftSigner::new();
        let ca_der = ca(&s);
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        // Whatever a CSR asks for (one asking is refused, see below), the
        // certificate carries the profile only.
        let checked = check_csr(&csr(&k, "SN1", NONCE, false), "SN1", &spki(&k), NONCE, &Profile::default()).unwrap();
        let now = OffsetDateTime::now_utc();
        let plan = plan(&Profile::default(), "SN1", &checked.spki_der, now, now + Duration::days(7300)).unwrap();
        let der = build_certificate(&plan, &Profile::default(), &ca_der, &mut s).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "SN1");
        assert_eq!(cert.raw_serial(), plan.serial.as_slice());
        assert!(cert.raw_serial().len() >= 8);
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(cert.public_key().raw, spki(&k).as_slice());
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
            _ => None,
        });
        let ca_ski = ca_cert.extensions().iter().find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(s) => Some(s.0.to_vec()),
            _ => None,
        });
        assert_eq!(aki.map(|a| a.0.to_vec()), ca_ski);
        let sum = summarize(&der).unwrap();
        assert_eq!(sum.serial_hex, plan.serial_hex());
        assert_eq!(sum.spki_sha256, spki_sha256_hex(&spki(&k)));
        assert_eq!(sum.not_before, plan.not_before);
    }

    /// A CA expiring in days issued a ten-year certificate (issue 12).
    #[test]
    fn a_leaf_is_capped_at_its_cas_not_after() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let ca_end = now + Duration::days(5);
        let p = plan(&Profile::default(), "SN1", b"k", now, ca_end).unwrap();
        assert_eq!(p.not_after, ca_end, "capped at the CA's notAfter");
        assert!(p.not_before < now);
        // A CA that outlives the profile's validity does not change it.
        let long = plan(&Profile::default(), "SN1", b"k", now, now + Duration::days(9000)).unwrap();
        assert_eq!(long.not_after, now + Duration::days(3650));
    }

    #[test]
    fn a_profile_that_refuses_capping_refuses_a_leaf_that_would_outlive_its_ca() {
        let now = OffsetDateTime::now_utc();
        let strict = Profile { cap_at_ca_expiry: false, ..Profile::default() };
        let e = plan(&strict, "SN1", b"k", now, now + Duration::days(5)).unwrap_err();
        assert_eq!(e.code(), FailureCode::LeafOutlivesCa);
        assert!(e.to_string().contains("cap_at_ca_expiry = false"), "{e}");
        // Inside the CA's lifetime it is issued as asked.
        let p = plan(&strict, "SN1", b"k", now, now + Duration::days(4000)).unwrap();
        assert!(p.not_after < now + Duration::days(3651));
    }

    #[test]
    fn an_expired_ca_plans_nothing() {
        let now = OffsetDateTime::now_utc();
        let e = plan(&Profile::default(), "SN1", b"k", now, now - Duration::seconds(1)).unwrap_err();
        assert_eq!(e.code(), FailureCode::CaExpired);
        assert!(e.to_string().contains("expired on"), "{e}");
    }

    #[test]
    fn serials_are_positive_16_bytes_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
        assert_ne!(a, b);
    }

    #[test]
    fn pop_verifies_only_with_the_right_key() {
        let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let sig = rcgen::SigningKey::sign(&k, b"msg").unwrap();
        verify_pop(&spki(&k), b"msg", &sig).unwrap();
        assert!(verify_pop(&spki(&other), b"msg", &sig).is_err());
        assert!(verify_pop(&spki(&k), b"other msg", &sig).is_err());
    }
}
