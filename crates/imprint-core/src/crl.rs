//! Certificate revocation: the RFC 5280 reason codes Imprint records, and
//! CRLs (RFC 5280 §5) built by rcgen's `CertificateRevocationListParams`
//! and signed by the CA [`Signer`] (PKCS#11, KMS or development alike), so
//! the DER is a maintained crate's, not ours.
//!
//! What a CRL carries: version 2, the CA's subject as issuer, thisUpdate and
//! nextUpdate, each revoked serial with its revocation time and (except for
//! `unspecified`, which RFC 5280 §5.3.1 says to leave out) its reasonCode,
//! and the CRL extensions authorityKeyIdentifier (the CA certificate's own
//! subjectKeyIdentifier when it has one, so path builders match it) and
//! cRLNumber.
//!
//! `certificateHold` is not supported: a hold is undone by `removeFromCRL`,
//! and a revoked certificate never changes again here (locally and at the
//! center).

use crate::signer::{RcgenKey, Signer, SignerError};
use imprint_proto::Closed;
use time::OffsetDateTime;

/// Why a certificate was revoked: RFC 5280 §5.3.1 `CRLReason`, the values
/// that apply to a device certificate. Closed; stored as the snake_case text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// 0; not written into the CRL entry (RFC 5280 §5.3.1: absent reasonCode).
    Unspecified,
    /// 1: the device's private key is (or may be) known to someone else.
    KeyCompromise,
    /// 2: the CA's key is compromised.
    CaCompromise,
    /// 3: the device changed hands or purpose.
    AffiliationChanged,
    /// 4: replaced by a newer certificate (rework, renewal).
    Superseded,
    /// 5: the device is scrapped or out of service.
    CessationOfOperation,
    /// 9: the device's rights were withdrawn.
    PrivilegeWithdrawn,
}

impl Closed for RevocationReason {
    const ALL: &'static [RevocationReason] = &[
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];
    fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key_compromise",
            RevocationReason::CaCompromise => "ca_compromise",
            RevocationReason::AffiliationChanged => "affiliation_changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation_of_operation",
            RevocationReason::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }
}

/// Why a reason text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("certificateHold is not supported: a revocation here is final (revoke with another reason, or do not revoke yet)")]
    HoldNotSupported,
    #[error("unknown revocation reason {0:?}; reasons: {list}", list = RevocationReason::names())]
    Unknown(String),
}

impl RevocationReason {
    /// The RFC 5280 name (`keyCompromise`, ...).
    pub fn rfc_name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The `CRLReason` code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    /// Every reason's stored text, for messages.
    pub fn names() -> String {
        Self::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The reason an operator typed: the stored text, the RFC name or a
    /// kebab-case spelling (`key-compromise`), case-insensitively.
    pub fn from_input(text: &str) -> Result<RevocationReason, ReasonError> {
        let norm = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
        let want = norm(text.trim());
        if want == "certificatehold" || want == "hold" || want == "removefromcrl" {
            return Err(ReasonError::HoldNotSupported);
        }
        Self::ALL.iter().copied().find(|r| norm(r.as_str()) == want).ok_or_else(|| ReasonError::Unknown(text.chars().take(64).collect()))
    }

    fn rcgen(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => None,
            RevocationReason::KeyCompromise => Some(R::KeyCompromise),
            RevocationReason::CaCompromise => Some(R::CaCompromise),
            RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
            RevocationReason::Superseded => Some(R::Superseded),
            RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
            RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
        }
    }
}

/// One revoked certificate in a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// The certificate's serial as lower-case hex (as recorded).
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// What to put in a CRL.
#[derive(Clone, Debug)]
pub struct CrlPlan {
    /// cRLNumber: monotonic per issuer (kept by the caller's store).
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub entries: Vec<CrlEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("{0}")]
    Signer(SignerError),
    #[error("cannot build the CRL: {0}")]
    Build(String),
}

impl From<SignerError> for CrlError {
    fn from(e: SignerError) -> Self {
        CrlError::Signer(e)
    }
}

/// The subjectKeyIdentifier of a DER certificate, if it has one.
pub fn subject_key_id(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, x) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    x.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// Build and sign a CRL for the CA `ca_cert_der` with its `signer`.
/// Entries are written in serial order, each serial once.
pub fn build_crl(plan: &CrlPlan, ca_cert_der: &[u8], signer: &mut dyn Signer) -> Result<Vec<u8>, CrlError> {
    use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, RevokedCertParams, SerialNumber};
    let mut entries = plan.entries.clone();
    entries.sort_by(|a, b| (a.serial_hex.len(), &a.serial_hex).cmp(&(b.serial_hex.len(), &b.serial_hex)));
    entries.dedup_by(|a, b| a.serial_hex == b.serial_hex);
    let mut revoked = Vec::with_capacity(entries.len());
    for e in &entries {
        let bytes = hex::decode(&e.serial_hex).map_err(|_| CrlError::Build(format!("serial {:?} is not hex", e.serial_hex)))?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: e.revoked_at,
            reason_code: e.reason.rcgen(),
            invalidity_date: None,
        });
    }
    let key_identifier_method = match subject_key_id(ca_cert_der) {
        Some(ski) => KeyIdMethod::PreSpecified(ski),
        None => KeyIdMethod::Sha256,
    };
    // cRLNumber is a non-negative INTEGER: big-endian bytes, minimal.
    let number = plan.number.to_be_bytes();
    let first = number.iter().position(|b| *b != 0).unwrap_or(number.len() - 1);
    let params = CertificateRevocationListParams {
        this_update: plan.this_update,
        next_update: plan.next_update,
        crl_number: SerialNumber::from_slice(&number[first..]),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method,
    };
    let key = RcgenKey::new(signer)?;
    let issuer =
        Issuer::from_ca_cert_der(&ca_cert_der.to_vec().into(), &key).map_err(|e| CrlError::Build(format!("CA certificate: {e}")))?;
    let crl = params.signed_by(&issuer).map_err(|e| match key.take_error() {
        Some(se) => CrlError::Signer(se),
        None => CrlError::Build(e.to_string()),
    })?;
    Ok(crl.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_from_stored_rfc_and_kebab_spellings_and_hold_is_refused() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_input(r.as_str()), Ok(*r));
            assert_eq!(RevocationReason::from_input(r.rfc_name()), Ok(*r));
            assert_eq!(RevocationReason::from_input(&r.as_str().replace('_', "-").to_uppercase()), Ok(*r));
        }
        assert_eq!(RevocationReason::from_input("certificateHold"), Err(ReasonError::HoldNotSupported));
        let e = RevocationReason::from_input("lost").unwrap_err();
        assert!(e.to_string().contains("key_compromise"), "{e}");
        assert_eq!(RevocationReason::PrivilegeWithdrawn.code(), 9);
    }
}
