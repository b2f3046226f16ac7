//! The one seam every CA key backend sits behind.
//!
//! A [`Signer`] holds a CA private key somewhere this process cannot read it
//! (an HSM through PKCS#11, a remote KMS, or - for development only - a key
//! file) and produces signatures over bytes it is given. Callers never touch a
//! backend directly: the station runs exactly one signer on a dedicated worker
//! thread (see `imprint-station::signer_worker`), so a blocking PKCS#11 call or
//! a network round trip to a KMS is the same to every caller. A backend that is
//! async inside (KMS) blocks on its own runtime in `sign`; callers do not change.

use imprint_proto::FailureCode;
use std::fmt;

/// The signature algorithms a CA key may use. ECDSA only for now: every
/// backend we target (SoftHSM, YubiHSM, AWS KMS) supports them and they are
/// what IoT brokers expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigAlg {
    EcdsaP256Sha256,
    EcdsaP384Sha384,
}

impl SigAlg {
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            SigAlg::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            SigAlg::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
    /// Size in bytes of one coordinate / scalar (r and s of a raw signature).
    pub fn field_len(self) -> usize {
        match self {
            SigAlg::EcdsaP256Sha256 => 32,
            SigAlg::EcdsaP384Sha384 => 48,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SigAlg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SigAlg::EcdsaP384Sha384 => "ecdsa-p384-sha384",
        }
    }
    /// Hash `msg` with the digest this algorithm signs with.
    pub fn digest(self, msg: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            SigAlg::EcdsaP256Sha256 => sha2::Sha256::digest(msg).to_vec(),
            SigAlg::EcdsaP384Sha384 => sha2::Sha384::digest(msg).to_vec(),
        }
    }
}

/// Why a signer could not sign. Split so retry policy and the operator's
/// next action can match on the cause. Messages never contain a PIN or a
/// credential.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    #[error("signer URI is invalid: {0}")]
    BadUri(String),
    #[error("token not present: {0}")]
    TokenAbsent(String),
    #[error("PIN rejected or missing: {0}")]
    PinRejected(String),
    #[error("PIN is locked on the token: {0}")]
    PinLocked(String),
    #[error("CA key not found: {0}")]
    KeyNotFound(String),
    #[error("signer temporarily unavailable: {0}")]
    Transient(String),
    #[error("signer failed: {0}")]
    Failed(String),
}

impl SignerError {
    /// True where the same request may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SignerError::Transient(_))
    }
    /// The error's code in the failure catalogue (records and IPC).
    pub fn code(&self) -> FailureCode {
        match self {
            SignerError::BadUri(_) => FailureCode::SignerBadUri,
            SignerError::TokenAbsent(_) => FailureCode::SignerTokenAbsent,
            SignerError::PinRejected(_) => FailureCode::SignerPinRejected,
            SignerError::PinLocked(_) => FailureCode::SignerPinLocked,
            SignerError::KeyNotFound(_) => FailureCode::SignerKeyNotFound,
            SignerError::Transient(_) => FailureCode::SignerUnavailable,
            SignerError::Failed(_) => FailureCode::SignerFailed,
        }
    }
}

/// Who holds the key, for display and health. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerInfo {
    /// "pkcs11", "awskms", "dev".
    pub kind: &'static str,
    /// The signer URI with any secret-bearing attribute removed.
    pub uri: String,
    /// True for the software development CA: shown as DEVELOPMENT everywhere.
    pub development: bool,
}

/// A CA private key that signs but never leaves its home.
pub trait Signer: Send {
    fn info(&self) -> SignerInfo;
    fn algorithm(&self) -> SigAlg;
    /// The public key as a DER SubjectPublicKeyInfo.
    fn public_key_spki(&self) -> &[u8];
    /// Sign `msg` (the whole message; the backend hashes as its algorithm
    /// says) and return a DER-encoded ECDSA-Sig-Value.
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError>;
    /// A cheap check that the key can be used right now, without signing:
    /// one round trip for a remote signer (KMS: DescribeKey). The station
    /// calls it before starting a device when the last call failed. Local
    /// backends are usable once open, hence the default.
    fn check(&mut self) -> Result<(), SignerError> {
        Ok(())
    }
    /// Get ready for the next signature while nothing waits for one: the
    /// signer worker calls it when its queue is empty. PKCS#11 starts the
    /// next signing operation (`C_SignInit`: the token finds and unwraps the
    /// key, about half of a SoftHSM signature), so the next `sign` is only
    /// `C_Sign`. Never fails: what could not be prepared is done by `sign`.
    /// Remote and software signers have nothing to prepare, hence the default.
    fn prepare(&mut self) {}
}

impl fmt::Debug for dyn Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.info().uri)
    }
}

/// Encode a raw `r || s` ECDSA signature (as PKCS#11 CKM_ECDSA returns it)
/// as the DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` that
/// X.509 carries.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, SignerError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(SignerError::Failed(format!("raw ECDSA signature has odd length {}", raw.len())));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let ri = der_uint(r);
    let si = der_uint(s);
    let body_len = ri.len() + si.len();
    let mut out = Vec::with_capacity(body_len + 3);
    out.push(0x30);
    der_len(&mut out, body_len);
    out.extend_from_slice(&ri);
    out.extend_from_slice(&si);
    Ok(out)
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    let pad = b.first().is_some_and(|x| x & 0x80 != 0);
    let len = b.len() + usize::from(pad);
    let mut out = Vec::with_capacity(len + 3);
    out.push(0x02);
    der_len(&mut out, len);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(b);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.push(0x81);
        out.push(len as u8);
    } else {
        out.push(0x82);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

/// Adapts a [`Signer`] to rcgen's signing traits so rcgen can build and sign
/// a certificate with a key it never sees.
pub struct RcgenKey<'a> {
    signer: std::cell::RefCell<&'a mut dyn Signer>,
    raw_pub: Vec<u8>,
    alg: SigAlg,
    /// The first signer error, kept because rcgen only carries its own error type.
    pub last_error: std::cell::RefCell<Option<SignerError>>,
}

impl<'a> RcgenKey<'a> {
    pub fn new(signer: &'a mut dyn Signer) -> Result<Self, SignerError> {
        let alg = signer.algorithm();
        let raw_pub =
            spki_subject_key_bits(signer.public_key_spki()).map_err(|e| SignerError::Failed(format!("signer public key: {e}")))?;
        Ok(Self { signer: std::cell::RefCell::new(signer), raw_pub, alg, last_error: std::cell::RefCell::new(None) })
    }
    pub fn take_error(&self) -> Option<SignerError> {
        self.last_error.borrow_mut().take()
    }
}

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_pub
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg.rcgen()
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self.signer.borrow_mut().sign(msg) {
            Ok(sig) => Ok(sig),
            Err(e) => {
                *self.last_error.borrow_mut() = Some(e);
                Err(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

/// The BIT STRING contents (the raw public key) of a DER SubjectPublicKeyInfo.
pub fn spki_subject_key_bits(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_to_der_pads_high_bit_and_strips_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a 0x00 pad
        raw[32] = 0x00;
        raw[33] = 0x00;
        raw[34] = 0x01; // s has leading zeros to strip
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 30, 0x01]);
        assert_eq!(der[1] as usize, der.len() - 2);
    }

    #[test]
    fn raw_to_der_rejects_odd_length() {
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn raw_to_der_p384_worst_case_is_short_form_length() {
        // Largest P-384 body: 2 * (2 + 1 pad + 48) = 102 < 128, so DER
        // requires the short length form.
        let raw = vec![0xffu8; 96];
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..2], &[0x30, 102]);
        assert_eq!(der.len(), 104);
    }

    #[test]
    fn raw_to_der_long_body_uses_long_form_length() {
        // A P-521-sized signature (2 x 66 bytes) needs the long form.
        let raw = vec![0xffu8; 132];
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x81]);
        assert_eq!(der[2] as usize, der.len() - 3);
    }
}
