//! CA key backends behind [`imprint_core::signer::Signer`], chosen by URI.
//!
//! - `pkcs11:...` (RFC 7512): a key in an HSM or SoftHSM, see [`pkcs11`].
//! - `awskms:key-id=...;region=...`: a key in AWS KMS, see [`awskms`].
//! - `dev:<dir>`: the software development CA, see [`dev`].
//!
//! [`open_signer`] is the one entry point the station and the CLI use.

pub mod awskms;
pub mod dev;
pub mod pin;
pub mod pkcs11;
mod sign_ahead;
pub mod uri;

use imprint_core::signer::{SigAlg, Signer, SignerError};

pub use awskms::KmsSigner;
pub use dev::DevSigner;
pub use pin::{resolve_pin, Pin, PIN_ENV_VAR};
pub use pkcs11::{generate_ca_key, Pkcs11Signer};
pub use uri::Pkcs11Uri;

/// The URI schemes [`open_signer`] understands, for messages.
pub const SUPPORTED_SCHEMES: &str = "pkcs11:<RFC 7512 URI>, awskms:key-id=<id|ARN|alias/name>;region=<r>, dev:<directory>";

/// Open the CA signer a URI names.
///
/// `pin` is a PIN the caller already has (typed at a prompt); PKCS#11 falls
/// back to the URI's `pin-source` and then `IMPRINT_PKCS11_PIN`. The KMS
/// and development signers ignore it (KMS credentials come from the AWS
/// credential chain).
pub fn open_signer(uri: &str, pin: Option<Pin>) -> Result<Box<dyn Signer>, SignerError> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(SignerError::BadUri(format!("signer URI has no scheme; supported: {SUPPORTED_SCHEMES}")));
    };
    match scheme {
        "pkcs11" => Ok(Box::new(Pkcs11Signer::open(uri, pin)?)),
        "dev" => Ok(Box::new(DevSigner::open(rest)?)),
        "awskms" => Ok(Box::new(KmsSigner::open(uri)?)),
        other => Err(SignerError::BadUri(format!(
            // Only the scheme is echoed: the rest of an unknown URI may hold a secret.
            "unsupported signer URI scheme {other:?}; supported: {SUPPORTED_SCHEMES}"
        ))),
    }
}

/// A signer URI as health, logs and the app may show it, for a signer that
/// is not open (an open signer's [`SignerInfo`](imprint_core::signer::SignerInfo)
/// already holds this form): parsed and printed back, so it carries no
/// secret-bearing attribute; a URI that does not parse is shown by its
/// scheme alone.
pub fn display_uri(uri: &str) -> String {
    let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
    let shown = match scheme {
        "pkcs11" => Pkcs11Uri::parse(uri).ok().map(|u| u.to_string()),
        "awskms" => awskms::KmsUri::parse(uri, false).ok().map(|u| u.to_uri()),
        "dev" if !rest.contains(['?', ';', '&', '=']) => Some(uri.to_string()),
        _ => None,
    };
    shown.unwrap_or_else(|| {
        let scheme: String = scheme.chars().filter(char::is_ascii_alphanumeric).take(16).collect();
        format!("{scheme}:(not shown: the URI is invalid)")
    })
}

/// The kind of secret (`"pin-value"`, `"password"`, ...) a signer URI
/// carries in an attribute, found by the attribute's (percent-decoded,
/// case- and separator-insensitive) name, in any part of the URI, for any
/// scheme, without opening anything; `None` when it carries none.
pub fn secret_attribute(uri: &str) -> Option<&'static str> {
    let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
    rest.split([';', '?', '&']).find_map(|piece| {
        // `name=value`, or a malformed `name:value` / `name value`.
        let name = piece.split(['=', ':', ' ', '\t']).next().unwrap_or_default();
        if name.contains('/') {
            return None; // a path (dev:<dir>), not an attribute
        }
        let word = imprint_core::secrets::secret_word(name);
        match scheme {
            "awskms" if word.is_none() && awskms::looks_secret(name) => Some("credential"),
            _ => word,
        }
    })
}

/// Refuse a signer URI that carries a secret-bearing attribute (a PIN or a
/// credential) by the attribute's name (see [`secret_attribute`]). The
/// configuration calls this, so a URI that reaches a log or the screen never
/// holds one. Other faults of the URI are left to [`open_signer`].
pub fn check_uri_secrets(uri: &str) -> Result<(), SignerError> {
    match secret_attribute(uri) {
        None => Ok(()),
        Some(word) => Err(SignerError::BadUri(format!(
            "the signer URI carries a {word} attribute: a PIN or credential never lives in configuration; \
             use ?pin-source=<file>, the {PIN_ENV_VAR} environment variable or the PIN prompt \
             (awskms: the AWS credential chain)"
        ))),
    }
}

/// Create a CA key of `alg` for a signer URI and return the URI that names
/// it: PKCS#11 generates the key pair in the token (the URI is unchanged);
/// AWS KMS creates a key (and the URI's `alias/` if given) and returns a URI
/// with its ARN or alias. The development signer creates its key on open.
pub fn create_ca_key(uri: &str, pin: Option<Pin>, alg: SigAlg) -> Result<String, SignerError> {
    match uri.split_once(':').map(|(s, _)| s) {
        Some("pkcs11") => generate_ca_key(uri, pin, alg).map(|()| uri.to_string()),
        Some("awskms") => awskms::create_key(uri, alg),
        Some("dev") => Err(SignerError::BadUri("the development CA creates its key itself: drop --generate-key".into())),
        _ => Err(SignerError::BadUri(format!("cannot create a key for this URI; supported: {SUPPORTED_SCHEMES}"))),
    }
}

/// The DER SubjectPublicKeyInfo (id-ecPublicKey, named curve) of a raw
/// uncompressed EC point.
pub(crate) fn ec_spki(alg: SigAlg, point: &[u8]) -> Result<Vec<u8>, SignerError> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, curve OID }, BIT STRING (0 unused bits) }
    const ID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let curve: &[u8] = match alg {
        SigAlg::EcdsaP256Sha256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        SigAlg::EcdsaP384Sha384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        #[allow(unreachable_patterns)]
        other => return Err(SignerError::Failed(format!("no SubjectPublicKeyInfo encoding for {}", other.name()))),
    };
    if point.len() != 1 + 2 * alg.field_len() || point[0] != 0x04 {
        return Err(SignerError::Failed(format!("public key is not an uncompressed {} point", alg.name())));
    }
    let alg_id_len = ID_EC_PUBLIC_KEY.len() + curve.len();
    let bits_len = point.len() + 1;
    // Every length here is < 128 (P-384: 97 + 1), so short-form lengths suffice.
    let body_len = 2 + alg_id_len + 2 + bits_len;
    let mut out = Vec::with_capacity(2 + body_len);
    out.extend_from_slice(&[0x30, body_len as u8, 0x30, alg_id_len as u8]);
    out.extend_from_slice(ID_EC_PUBLIC_KEY);
    out.extend_from_slice(curve);
    out.extend_from_slice(&[0x03, bits_len as u8, 0x00]);
    out.extend_from_slice(point);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_lists_supported_and_hides_the_rest() {
        let err = open_signer("gcpkms:key-id?secret=hunter2", None).unwrap_err();
        assert!(matches!(err, SignerError::BadUri(_)));
        let msg = err.to_string();
        assert!(msg.contains("pkcs11:") && msg.contains("dev:"), "{msg}");
        assert!(!msg.contains("hunter2"));
        assert!(matches!(open_signer("no-scheme", None), Err(SignerError::BadUri(_))));
    }

    #[test]
    fn awskms_scheme_is_dispatched_and_hides_secrets() {
        let err = open_signer("awskms:key-id?secret=hunter2", None).unwrap_err();
        assert!(matches!(err, SignerError::BadUri(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = open_signer("awskms:region=eu-west-1", None).unwrap_err();
        assert!(err.to_string().contains("key-id"), "{err}");
        assert!(SUPPORTED_SCHEMES.contains("awskms:"));
    }

    #[test]
    fn dev_scheme_opens_and_needs_a_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let uri = format!("dev:{}", tmp.path().display());
        let s = open_signer(&uri, None).unwrap();
        assert_eq!(s.info().uri, uri);
        assert!(s.info().development);
        assert!(matches!(open_signer("dev:", None), Err(SignerError::BadUri(_))));
    }

    #[test]
    fn pkcs11_pin_value_is_refused() {
        let err = open_signer("pkcs11:token=t;object=k?pin-value=1234", None).unwrap_err();
        assert!(matches!(err, SignerError::BadUri(_)));
        assert!(!err.to_string().contains("1234"));
    }

    #[test]
    fn display_uri_shows_no_secret_and_no_invalid_uri() {
        assert_eq!(display_uri("pkcs11:object=k;token=T?module-path=/x.so"), "pkcs11:token=T;object=k?module-path=/x.so");
        for uri in [
            "pkcs11:token=T?pin%2Dvalue=S3CR3T-4711",
            "pkcs11:token=T;pin-value=S3CR3T-4711",
            "awskms:key-id=k;aws_secret_access_key=S3CR3T-4711",
            "gcpkms:key?password=S3CR3T-4711",
            "dev:/x?pin=S3CR3T-4711",
            "S3CR3T-4711",
        ] {
            let shown = display_uri(uri);
            assert!(!shown.contains("S3CR3T") && shown.contains("not shown"), "{uri}: {shown}");
        }
        assert_eq!(display_uri("awskms:key-id=alias/ca;region=eu-west-1"), "awskms:key-id=alias/ca;region=eu-west-1");
    }

    #[test]
    fn check_uri_secrets_refuses_by_name_only() {
        for uri in [
            "pkcs11:token=T?pin%2Dvalue=S3CR3T-4711",
            "pkcs11:token=T;PIN-VALUE=S3CR3T-4711",
            "pkcs11:token=T?pin:S3CR3T-4711",
            "awskms:key-id=k;session-token=S3CR3T-4711",
            "awskms:key-id=k;Aws_Access_Key_Id=S3CR3T-4711",
            "gcpkms:key?password=S3CR3T-4711",
        ] {
            let e = check_uri_secrets(uri).expect_err(uri).to_string();
            assert!(!e.contains("S3CR3T"), "{uri}: {e}");
        }
        for uri in [
            "pkcs11:token=T;object=k?pin-source=file:/run/secrets/imprint-pin",
            "pkcs11:token=T;object=k?module-path=/opt/secret-hsm/lib.so",
            "awskms:key-id=alias/secret-ca;region=eu-west-1",
            "dev:/var/lib/imprint/secrets/dev-ca",
            "pkcs11:type=bogus",
        ] {
            check_uri_secrets(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        }
    }

    #[test]
    fn spki_matches_x509_parser() {
        use x509_parser::prelude::FromDer;
        for (alg, n) in [(SigAlg::EcdsaP256Sha256, 65), (SigAlg::EcdsaP384Sha384, 97)] {
            let mut point = vec![0x04u8];
            point.extend(std::iter::repeat_n(7u8, n - 1));
            let der = ec_spki(alg, &point).unwrap();
            let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(&*spki.subject_public_key.data, &point[..]);
            assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        }
        assert!(ec_spki(SigAlg::EcdsaP256Sha256, &[0x04; 97]).is_err());
    }
}
