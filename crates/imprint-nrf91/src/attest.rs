//! The KEYGEN answer `Base64Url(CSR_DER).Base64Url(COSE_Sign1)` and its
//! attestation, as Nordic's reference and nRF Cloud's tools describe it:
//!
//! ```text
//! COSE_Sign1 (tag 18) = [ protected: bstr {1: -7 (ES256)},
//!                          unprotected: {4 (kid): bstr(cbor -2 = identity key)},
//!                          payload: bstr cbor [ 9 (CSR_msg_v1), device UUID (16 bytes),
//!                                               bstr(cbor sec_tag), SHA-256(CSR_DER) (32 bytes), nonce (16 bytes) ],
//!                          signature: bstr (r || s, 64 bytes) ]
//! ```
//!
//! What is checked here, I/O-free: the structure, the algorithm, the
//! message type, the sec_tag, and that the digest covers exactly the CSR
//! that came with it. The signature is by the modem's identity key, whose
//! public half the station does not hold (Nordic's identity service does):
//! it is kept, with the `Sig_structure` it covers, for a verifier that has
//! the key (docs/drivers.md).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use coset::cbor::value::Value;
use coset::{iana, CborSerializable, CoseSign1, TaggedCborSerializable};
use sha2::{Digest, Sha256};

/// The payload id of a CSR message (nRF Cloud's `CSR_msg_v1`).
pub const PAYLOAD_CSR_MSG_V1: u64 = 9;
/// The key id Nordic's modems put in the unprotected header: CBOR `-2`, the identity key.
pub const KID_IDENTITY_KEY: &[u8] = &[0x21];

/// Why a KEYGEN answer or its attestation is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttestError {
    /// Not `<b64url>.<b64url>`, or a side is not Base64Url.
    Format(String),
    /// No COSE part at all: the CSR is bound to nothing.
    Missing,
    /// Not a COSE_Sign1 of a CSR message as described above.
    Malformed(String),
    /// Well formed, but the digest is not over this CSR.
    DigestMismatch { attested: String, csr: String },
    /// Well formed, but for another sec_tag.
    SecTagMismatch { attested: u64, asked: u32 },
}

impl std::fmt::Display for AttestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttestError::Format(w) => write!(f, "the KEYGEN answer is not Base64Url(CSR).Base64Url(COSE_Sign1): {w}"),
            AttestError::Missing => write!(f, "the KEYGEN answer carries no COSE_Sign1 attestation"),
            AttestError::Malformed(w) => write!(f, "the KEYGEN attestation is not a COSE_Sign1 of a CSR message: {w}"),
            AttestError::DigestMismatch { attested, csr } => {
                write!(f, "the attestation's digest {attested} does not cover the CSR (SHA-256 {csr})")
            }
            AttestError::SecTagMismatch { attested, asked } => {
                write!(f, "the attestation is for sec_tag {attested}, the key was asked for sec_tag {asked}")
            }
        }
    }
}

/// What a checked attestation says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrAttestation {
    /// The modem's device UUID, lowercase with dashes.
    pub device_uuid: String,
    pub sec_tag: u64,
    /// SHA-256 of the CSR DER (equal to the CSR's: checked).
    pub csr_sha256: [u8; 32],
    pub nonce: Vec<u8>,
    /// The raw ECDSA signature (r || s).
    pub signature: Vec<u8>,
    /// The COSE `Sig_structure` the signature covers (external AAD empty).
    pub tbs: Vec<u8>,
}

/// The two halves of a KEYGEN answer: (CSR DER, COSE bytes, COSE as sent).
pub fn split_keygen(answer: &str) -> Result<(Vec<u8>, Vec<u8>, String), AttestError> {
    let answer = answer.trim().trim_matches('"');
    let mut parts = answer.split('.');
    let csr_b64 = parts.next().unwrap_or_default();
    let cose_b64 = parts.next();
    if parts.next().is_some() {
        return Err(AttestError::Format("more than two parts".into()));
    }
    let csr = URL_SAFE_NO_PAD.decode(csr_b64.trim_end_matches('=')).map_err(|e| AttestError::Format(format!("CSR part: {e}")))?;
    let Some(cose_b64) = cose_b64.filter(|c| !c.is_empty()) else { return Err(AttestError::Missing) };
    let cose = URL_SAFE_NO_PAD.decode(cose_b64.trim_end_matches('=')).map_err(|e| AttestError::Format(format!("COSE part: {e}")))?;
    Ok((csr, cose, cose_b64.to_string()))
}

fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() != 32 {
        return h;
    }
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Check the attestation `cose` of `csr_der`, asked for `sec_tag`.
pub fn check(csr_der: &[u8], cose: &[u8], sec_tag: u32) -> Result<CsrAttestation, AttestError> {
    let bad = |w: &str| AttestError::Malformed(w.to_string());
    let sign1 = CoseSign1::from_tagged_slice(cose)
        .or_else(|_| CoseSign1::from_slice(cose))
        .map_err(|e| AttestError::Malformed(format!("not COSE_Sign1 CBOR: {e}")))?;
    if sign1.protected.header.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::ES256)) {
        return Err(bad("the protected header does not name ES256 (ECDSA w/ SHA-256)"));
    }
    if sign1.signature.len() != 64 {
        return Err(AttestError::Malformed(format!("an ES256 signature is 64 bytes, this one {}", sign1.signature.len())));
    }
    let payload = sign1.payload.as_deref().ok_or_else(|| bad("no payload"))?;
    let value: Value = coset::cbor::de::from_reader(payload).map_err(|e| AttestError::Malformed(format!("payload is not CBOR: {e}")))?;
    let Value::Array(items) = value else { return Err(bad("the payload is not a CBOR array")) };
    if items.len() < 4 {
        return Err(bad("the payload has fewer than 4 items"));
    }
    let id = items[0].as_integer().and_then(|i| u64::try_from(i).ok());
    if id != Some(PAYLOAD_CSR_MSG_V1) {
        return Err(AttestError::Malformed(format!("payload id {id:?} is not CSR_msg_v1 (9)")));
    }
    let uuid = items[1].as_bytes().filter(|b| b.len() == 16).ok_or_else(|| bad("the device UUID is not 16 bytes"))?;
    let tag_cbor = items[2].as_bytes().ok_or_else(|| bad("the sec_tag is not a CBOR byte string"))?;
    let tag: Value =
        coset::cbor::de::from_reader(tag_cbor.as_slice()).map_err(|e| AttestError::Malformed(format!("sec_tag is not CBOR: {e}")))?;
    let tag = tag.as_integer().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| bad("the sec_tag is not an unsigned integer"))?;
    let digest: [u8; 32] =
        items[3].as_bytes().and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()).ok_or_else(|| bad("the digest is not 32 bytes"))?;
    let nonce = items.get(4).and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
    let csr_digest: [u8; 32] = Sha256::digest(csr_der).into();
    if digest != csr_digest {
        return Err(AttestError::DigestMismatch { attested: hex::encode(digest), csr: hex::encode(csr_digest) });
    }
    if tag != u64::from(sec_tag) {
        return Err(AttestError::SecTagMismatch { attested: tag, asked: sec_tag });
    }
    Ok(CsrAttestation {
        device_uuid: uuid_text(uuid),
        sec_tag: tag,
        csr_sha256: digest,
        nonce,
        tbs: sign1.tbs_data(b""),
        signature: sign1.signature,
    })
}

/// The CBOR payload of a CSR message (what a modem signs): for the
/// simulator and tests.
pub fn csr_message_payload(device_uuid: [u8; 16], sec_tag: u32, csr_sha256: [u8; 32], nonce: [u8; 16]) -> Vec<u8> {
    let mut tag = Vec::new();
    let _ = coset::cbor::ser::into_writer(&Value::Integer(u64::from(sec_tag).into()), &mut tag);
    let v = Value::Array(vec![
        Value::Integer(PAYLOAD_CSR_MSG_V1.into()),
        Value::Bytes(device_uuid.to_vec()),
        Value::Bytes(tag),
        Value::Bytes(csr_sha256.to_vec()),
        Value::Bytes(nonce.to_vec()),
    ]);
    let mut out = Vec::new();
    let _ = coset::cbor::ser::into_writer(&v, &mut out);
    out
}

/// A tagged COSE_Sign1 over `payload` as a modem makes it; `sign` gets the
/// `Sig_structure` and returns the raw r || s signature.
pub fn sign1(payload: Vec<u8>, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let protected = coset::HeaderBuilder::new().algorithm(iana::Algorithm::ES256).build();
    let unprotected = coset::HeaderBuilder::new().key_id(KID_IDENTITY_KEY.to_vec()).build();
    coset::CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload)
        .create_signature(b"", sign)
        .build()
        .to_tagged_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(csr: &[u8], digest_of: &[u8], tag: u32) -> String {
        let payload = csr_message_payload([7; 16], tag, Sha256::digest(digest_of).into(), [1; 16]);
        let cose = sign1(payload, |_| vec![0xAB; 64]);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(csr), URL_SAFE_NO_PAD.encode(cose))
    }

    #[test]
    fn an_attestation_over_the_csr_is_accepted_with_its_uuid_and_sig_structure() {
        let (csr, cose, _) = split_keygen(&answer(b"csr", b"csr", 42)).unwrap();
        let a = check(&csr, &cose, 42).unwrap();
        assert_eq!(a.device_uuid, "07070707-0707-0707-0707-070707070707");
        assert_eq!(a.sec_tag, 42);
        assert_eq!(a.signature, vec![0xAB; 64]);
        assert!(!a.tbs.is_empty());
    }

    #[test]
    fn a_cose_signature_that_does_not_cover_the_csr_is_refused() {
        let (csr, cose, _) = split_keygen(&answer(b"csr", b"another csr", 42)).unwrap();
        assert!(matches!(check(&csr, &cose, 42), Err(AttestError::DigestMismatch { .. })));
        let (csr, cose, _) = split_keygen(&answer(b"csr", b"csr", 41)).unwrap();
        assert!(matches!(check(&csr, &cose, 42), Err(AttestError::SecTagMismatch { attested: 41, asked: 42 })));
    }

    #[test]
    fn a_keygen_answer_without_cose_or_with_garbage_is_refused() {
        assert_eq!(split_keygen("\"AAAA\""), Err(AttestError::Missing));
        assert_eq!(split_keygen("AAAA."), Err(AttestError::Missing));
        assert!(matches!(split_keygen("AAAA.B.C"), Err(AttestError::Format(_))));
        assert!(matches!(split_keygen("AA*A.BBBB"), Err(AttestError::Format(_))));
        let (csr, _, _) = split_keygen(&answer(b"csr", b"csr", 1)).unwrap();
        assert!(matches!(check(&csr, b"\xd2\x84", 1), Err(AttestError::Malformed(_))));
        assert!(matches!(check(&csr, &[], 1), Err(AttestError::Malformed(_))));
    }
}
