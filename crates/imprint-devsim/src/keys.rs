//! Device keys (ECDSA P-256/P-384 via ring, RSA-1024 for the `weak-key`
//! fault) and the nonce-bound PKCS#10 CSR.

use rcgen::{Attribute, CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use rsa::pkcs1::EncodeRsaPublicKey;
use sha2::{Digest, Sha256};

/// OID of PKCS#9 challengePassword.
pub const OID_CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
/// OID of X.520 serialNumber.
pub const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

/// Key algorithm of a device key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    P384,
    /// RSA-1024: only ever made by the `weak-key` fault.
    Rsa1024,
}

impl KeyKind {
    /// The `alg` value of KEYGEN.
    pub fn keygen_alg(self) -> &'static str {
        match self {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::Rsa1024 => "rsa1024",
        }
    }
    /// The `alg` value of PROVE.
    pub fn proof_alg(self) -> &'static str {
        match self {
            KeyKind::P256 => "ecdsa-sha256",
            KeyKind::P384 => "ecdsa-sha384",
            KeyKind::Rsa1024 => "rsa-pkcs1-sha256",
        }
    }
}

/// An RSA key usable by rcgen: `der_bytes` is the PKCS#1 RSAPublicKey, the
/// signature sha256WithRSAEncryption.
pub struct RsaKey {
    private: rsa::RsaPrivateKey,
    pkcs1_der: Vec<u8>,
}

impl RsaKey {
    pub fn generate(bits: usize) -> Result<Self, String> {
        let mut rng = rsa::rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| e.to_string())?;
        let pkcs1_der = private.to_public_key().to_pkcs1_der().map_err(|e| e.to_string())?.as_bytes().to_vec();
        Ok(RsaKey { private, pkcs1_der })
    }
}

impl PublicKeyData for RsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.pkcs1_der
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for RsaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = Sha256::digest(msg);
        self.private.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A key held by the simulated device. It never leaves the device: only its
/// SubjectPublicKeyInfo and signatures do.
pub enum DeviceKey {
    Ec(KeyPair, KeyKind),
    Rsa(RsaKey),
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({:?})", self.kind())
    }
}

impl DeviceKey {
    pub fn generate(kind: KeyKind) -> Result<Self, String> {
        match kind {
            KeyKind::P256 => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map(|k| DeviceKey::Ec(k, kind)).map_err(|e| e.to_string())
            }
            KeyKind::P384 => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map(|k| DeviceKey::Ec(k, kind)).map_err(|e| e.to_string())
            }
            KeyKind::Rsa1024 => RsaKey::generate(1024).map(DeviceKey::Rsa),
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            DeviceKey::Ec(_, k) => *k,
            DeviceKey::Rsa(_) => KeyKind::Rsa1024,
        }
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.subject_public_key_info()
    }
}

impl PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            DeviceKey::Ec(k, _) => k.der_bytes(),
            DeviceKey::Rsa(k) => k.der_bytes(),
        }
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            DeviceKey::Ec(k, _) => PublicKeyData::algorithm(k),
            DeviceKey::Rsa(k) => k.algorithm(),
        }
    }
}

impl SigningKey for DeviceKey {
    /// ECDSA over SHA-256 (P-256) or SHA-384 (P-384), DER-encoded; RSA
    /// PKCS#1 v1.5 over SHA-256.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            DeviceKey::Ec(k, _) => k.sign(msg),
            DeviceKey::Rsa(k) => k.sign(msg),
        }
    }
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// The challengePassword attribute: `SET { UTF8String lowercase-hex(nonce) }`.
/// rcgen writes `values` verbatim after the OID, so it is the DER of the
/// whole SET OF, tag included.
pub fn challenge_attribute(nonce: &[u8]) -> Attribute {
    let text = hex::encode(nonce);
    let utf8 = der_tlv(0x0C, text.as_bytes());
    Attribute { oid: OID_CHALLENGE_PASSWORD, values: der_tlv(0x31, &utf8) }
}

/// serialNumber is a PrintableString in X.520; a serial outside that
/// alphabet (e.g. with `_`) falls back to UTF8String.
fn serial_number_value(serial: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(serial) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(serial.to_string()),
    }
}

/// A PKCS#10 CSR: subject `CN=<serial>, serialNumber=<serial>`, the key's
/// SPKI, a challengePassword of hex(nonce), self-signed with `key`.
pub fn build_csr(subject_serial: &str, challenge_nonce: &[u8], key: &impl SigningKey) -> Result<Vec<u8>, String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_serial);
    dn.push(DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()), serial_number_value(subject_serial));
    params.distinguished_name = dn;
    params
        .serialize_request_with_attributes(key, vec![challenge_attribute(challenge_nonce)])
        .map(|csr| csr.der().to_vec())
        .map_err(|e| e.to_string())
}

/// Flip one byte of a CSR's signature (its last byte) so it no longer
/// verifies while the DER still parses.
pub fn corrupt_signature(csr_der: &mut [u8]) {
    if let Some(last) = csr_der.last_mut() {
        *last ^= 0x01;
    }
}
