//! The CSR checks with arbitrary DER (seeded with real CSRs: P-256, P-384,
//! RSA, with and without the nonce). The first byte decides whether the
//! KEYGEN key is the CSR's own (so the checks past "key equals KEYGEN key" are
//! reached) or arbitrary. Also fed to the proof-of-possession verifier and the
//! certificate summary, which read device-returned DER too. Checks, beyond "no
//! panic": a CSR that passes carries exactly the KEYGEN key.
#![no_main]
use imprint_core::issuance::{check_csr, key_kind, summarize, verify_pop, Profile};
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

const SERIAL: &str = "SN-FUZZ-0001";
const NONCE: &[u8] = &[0x5a; 16];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, der)) = data.split_first() else { return };
    let own = X509CertificationRequest::from_der(der).ok().map(|(_, c)| c.certification_request_info.subject_pki.raw.to_vec());
    let keygen = match (mode & 1, own) {
        (0, Some(spki)) => spki,
        _ => der.get(..usize::from(mode).min(der.len())).unwrap_or_default().to_vec(),
    };
    let profile = Profile::default();
    if let Ok(ok) = check_csr(der, SERIAL, &keygen, NONCE, &profile) {
        assert_eq!(ok.spki_der, keygen, "a CSR passed with a key other than the KEYGEN key");
    }
    let _ = key_kind(der);
    let _ = key_kind(&keygen);
    let (msg, sig) = der.split_at(der.len() / 2);
    let _ = verify_pop(&keygen, msg, sig);
    let _ = summarize(der);
});
