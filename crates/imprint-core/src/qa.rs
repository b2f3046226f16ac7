//! QA verification: the checks a QA operator's verdict is made of, each a
//! pure function over what was read back from a device (docs/lifecycle.md,
//! "QA verification").
//!
//! The chain is validated with `rustls-webpki` (the path builder and
//! signature checks rustls itself uses, already in the tree through rustls;
//! ring for the signatures), not with hand-written checks: name chaining,
//! signatures, basic constraints and path length of every CA certificate,
//! and clientAuth usage. Time is judged separately ([`check_validity`]) so a
//! verdict says *which* of the two failed: the path is validated as of the
//! leaf's notBefore (when it was issued), and validity checks every
//! certificate on the path against now.

use crate::issuance::Profile;
use imprint_proto::Closed;
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One check of a QA verdict: a closed set, stored and synced as its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QaCheck {
    /// The certificate chains to the station's configured CA.
    Chain,
    /// Now is inside the validity of the certificate and of every CA above it.
    Validity,
    /// Subject CN/serialNumber = the device serial, KU digitalSignature, EKU
    /// clientAuth, not a CA.
    Profile,
    /// The store holds exactly this certificate, for this device and key.
    StoreRecord,
    /// The center holds exactly this certificate (issuer, serial, key,
    /// device serial) and it is current there (`[central]` or `--central`).
    CenterRecord,
    /// A fresh proof of possession verifies with the certified key.
    ProofOfPossession,
    /// The device reports itself locked (when the profile locks devices).
    Lock,
    /// The store's status of the certificate is not revoked.
    Revocation,
    /// The device's own mTLS connect to the broker (`[mqtt] device_check`).
    MqttConnect,
}

impl QaCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            QaCheck::Chain => "chain",
            QaCheck::Validity => "validity",
            QaCheck::Profile => "profile",
            QaCheck::StoreRecord => "store_record",
            QaCheck::CenterRecord => "center_record",
            QaCheck::ProofOfPossession => "proof_of_possession",
            QaCheck::Lock => "lock",
            QaCheck::Revocation => "revocation",
            QaCheck::MqttConnect => "mqtt_connect",
        }
    }
}

impl Closed for QaCheck {
    const ALL: &'static [QaCheck] = &[
        QaCheck::Chain,
        QaCheck::Validity,
        QaCheck::Profile,
        QaCheck::StoreRecord,
        QaCheck::CenterRecord,
        QaCheck::ProofOfPossession,
        QaCheck::Lock,
        QaCheck::Revocation,
        QaCheck::MqttConnect,
    ];
    fn as_str(self) -> &'static str {
        QaCheck::as_str(self)
    }
}

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckResult {
    Pass,
    Fail,
    /// Not applicable here (e.g. no `[mqtt] device_check`); does not fail the verdict.
    Skipped,
    /// The center was to be asked and could not be reached: not a pass (the
    /// verdict is no pass) and not a failure of the device either.
    Unreachable,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Fail => "fail",
            CheckResult::Skipped => "skipped",
            CheckResult::Unreachable => "unreachable",
        }
    }
}

impl Closed for CheckResult {
    const ALL: &'static [CheckResult] = &[CheckResult::Pass, CheckResult::Fail, CheckResult::Skipped, CheckResult::Unreachable];
    fn as_str(self) -> &'static str {
        CheckResult::as_str(self)
    }
}

/// One named check with its result and what it found, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub check: QaCheck,
    pub result: CheckResult,
    pub detail: String,
}

impl CheckOutcome {
    /// Pass with `Ok(detail)`, fail with `Err(detail)`.
    pub fn judge(check: QaCheck, r: Result<String, String>) -> CheckOutcome {
        match r {
            Ok(detail) => CheckOutcome { check, result: CheckResult::Pass, detail },
            Err(detail) => CheckOutcome { check, result: CheckResult::Fail, detail },
        }
    }
    pub fn skipped(check: QaCheck, why: impl Into<String>) -> CheckOutcome {
        CheckOutcome { check, result: CheckResult::Skipped, detail: why.into() }
    }
    pub fn unreachable(check: QaCheck, why: impl Into<String>) -> CheckOutcome {
        CheckOutcome { check, result: CheckResult::Unreachable, detail: why.into() }
    }
    /// Whether this outcome keeps the verdict from passing (a failure, or a
    /// center that could not be asked).
    pub fn blocks_pass(&self) -> bool {
        matches!(self.result, CheckResult::Fail | CheckResult::Unreachable)
    }
}

/// Split concatenated DER certificates (a device's `chain` object).
pub fn split_der_certs(mut der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) =
            X509Certificate::from_der(der).map_err(|e| format!("certificate {} of the chain does not parse: {e}", out.len() + 1))?;
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(|e| format!("the certificate does not parse: {e}"))
}

/// The certificate's SubjectPublicKeyInfo, DER.
pub fn cert_spki(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    Ok(parse(cert_der)?.public_key().raw.to_vec())
}

static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The certificate chains to the configured CA: `trusted` is the station's
/// CA chain (issuing CA first, root last); its root is the trust anchor and
/// the rest, with the device's own `device_chain`, may serve as
/// intermediates. Validated as of the leaf's notBefore (time is
/// [`check_validity`]'s), for TLS client authentication.
pub fn check_chain(cert_der: &[u8], device_chain: &[Vec<u8>], trusted: &[Vec<u8>]) -> Result<String, String> {
    let leaf = parse(cert_der)?;
    let issued = leaf.validity().not_before.timestamp().max(0) as u64;
    let Some(root) = trusted.last() else {
        return Err("the station has no CA chain configured".into());
    };
    let root_der = CertificateDer::from(root.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&root_der).map_err(|e| format!("the configured CA root is not usable: {e:?}"))?;
    let intermediates: Vec<CertificateDer<'_>> =
        trusted.iter().rev().skip(1).chain(device_chain.iter()).map(|d| CertificateDer::from(d.as_slice())).collect();
    let ee_der = CertificateDer::from(cert_der);
    let ee =
        webpki::EndEntityCert::try_from(&ee_der).map_err(|e| format!("the certificate is not a usable end-entity certificate: {e:?}"))?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(issued));
    let path = ee
        .verify_for_usage(ALGS, std::slice::from_ref(&anchor), &intermediates, at, webpki::KeyUsage::client_auth(), None, None)
        .map_err(|e| format!("does not chain to the configured CA ({}): {e:?}", name_of(root)))?;
    let depth = path.intermediate_certificates().count();
    Ok(format!("chains to the configured CA {} ({} intermediate{})", name_of(root), depth, if depth == 1 { "" } else { "s" }))
}

fn name_of(der: &[u8]) -> String {
    parse(der).map(|c| c.subject().to_string()).unwrap_or_else(|_| "?".into())
}

/// Now is within the validity period of the certificate and of every
/// certificate of `chain` (the CAs above it).
pub fn check_validity(cert_der: &[u8], chain: &[Vec<u8>], now: OffsetDateTime) -> Result<String, String> {
    let t = now.unix_timestamp();
    let leaf = parse(cert_der)?;
    for (what, der) in std::iter::once(("the certificate", cert_der)).chain(chain.iter().map(|d| ("its CA", d.as_slice()))) {
        let c = parse(der)?;
        let v = c.validity();
        if v.not_before.timestamp() > t {
            return Err(format!("{what} {} is not valid yet (notBefore {})", c.subject(), v.not_before));
        }
        if v.not_after.timestamp() < t {
            return Err(format!("{what} {} has expired (notAfter {})", c.subject(), v.not_after));
        }
    }
    let v = leaf.validity();
    Ok(format!("valid from {} to {}", v.not_before, v.not_after))
}

/// The certificate has the station's device profile for `serial`: exactly
/// one CN equal to the serial, serialNumber equal to it (when the profile
/// puts it there), KU digitalSignature, EKU clientAuth, and not a CA.
pub fn check_profile(cert_der: &[u8], serial: &str, profile: &Profile) -> Result<String, String> {
    let c = parse(cert_der)?;
    let mut problems = Vec::new();
    let cns: Vec<&str> = c.subject().iter_common_name().map(|a| a.as_str().unwrap_or("?")).collect();
    if cns != [serial] {
        problems.push(format!("subject CN is {cns:?}, not the device serial {serial:?}"));
    }
    if profile.subject_serial_number {
        let sns: Vec<String> = c
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .map(|a| a.as_str().map(str::to_string).unwrap_or_else(|_| "?".into()))
            .collect();
        if sns != [serial] {
            problems.push(format!("subject serialNumber is {sns:?}, not the device serial {serial:?}"));
        }
    }
    match c.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() && !ku.value.key_cert_sign() => {}
        Ok(Some(ku)) => problems.push(format!("key usage is {}, not digitalSignature alone", ku.value)),
        Ok(None) => problems.push("no key usage extension (digitalSignature expected)".into()),
        Err(e) => problems.push(format!("key usage does not parse: {e}")),
    }
    match c.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(_) => problems.push("extended key usage lacks clientAuth".into()),
        Err(e) => problems.push(format!("extended key usage does not parse: {e}")),
    }
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => problems.push("basic constraints say it is a CA".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("basic constraints do not parse: {e}")),
    }
    if problems.is_empty() {
        Ok(format!("subject {}; digitalSignature; clientAuth; not a CA", c.subject()))
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    struct Ca {
        der: Vec<u8>,
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Ca { der, params: p, key }
    }

    fn leaf(ca: &Ca, serial: &str, days: (i64, i64), eku: bool) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, serial);
        p.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if eku {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let now = OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(days.0);
        p.not_after = now + time::Duration::days(days.1);
        p.signed_by(&KeyPair::generate().unwrap(), &Issuer::from_params(&ca.params, &ca.key)).unwrap().der().to_vec()
    }

    #[test]
    fn a_good_leaf_passes_chain_validity_and_profile() {
        let ca = ca("QA Test CA");
        let cert = leaf(&ca, "DEV-1", (-1, 30), true);
        let chain = vec![ca.der.clone()];
        check_chain(&cert, &chain, &chain).unwrap();
        check_validity(&cert, &chain, OffsetDateTime::now_utc()).unwrap();
        check_profile(&cert, "DEV-1", &Profile::default()).unwrap();
    }

    #[test]
    fn another_cas_leaf_fails_the_chain_check_only() {
        let (ours, theirs) = (ca("Ours"), ca("Theirs"));
        let cert = leaf(&theirs, "DEV-1", (-1, 30), true);
        let e = check_chain(&cert, std::slice::from_ref(&theirs.der), std::slice::from_ref(&ours.der)).unwrap_err();
        assert!(e.contains("does not chain to the configured CA"), "{e}");
        check_validity(&cert, &[], OffsetDateTime::now_utc()).unwrap();
    }

    #[test]
    fn an_expired_leaf_still_chains_but_fails_validity() {
        let ca = ca("QA Test CA");
        let cert = leaf(&ca, "DEV-1", (-60, -30), true);
        check_chain(&cert, std::slice::from_ref(&ca.der), std::slice::from_ref(&ca.der)).unwrap();
        let e = check_validity(&cert, std::slice::from_ref(&ca.der), OffsetDateTime::now_utc()).unwrap_err();
        assert!(e.contains("has expired"), "{e}");
    }

    #[test]
    fn a_leaf_for_another_serial_or_without_client_auth_fails_the_profile() {
        let ca = ca("QA Test CA");
        let e = check_profile(&leaf(&ca, "DEV-2", (-1, 30), true), "DEV-1", &Profile::default()).unwrap_err();
        assert!(e.contains("CN") && e.contains("serialNumber"), "{e}");
        let e = check_profile(&leaf(&ca, "DEV-1", (-1, 30), false), "DEV-1", &Profile::default()).unwrap_err();
        assert!(e.contains("clientAuth"), "{e}");
        // A CA certificate is not a device certificate.
        assert!(check_profile(&ca.der, "QA Test CA", &Profile { subject_serial_number: false, ..Profile::default() }).is_err());
    }

    #[test]
    fn check_texts_are_a_closed_set() {
        for c in QaCheck::ALL {
            assert_eq!(<QaCheck as Closed>::parse(c.as_str()), Some(*c));
        }
        assert_eq!(<QaCheck as Closed>::parse("lock "), None);
        assert_eq!(<CheckResult as Closed>::parse("skipped"), Some(CheckResult::Skipped));
    }
}
