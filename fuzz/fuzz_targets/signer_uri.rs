//! The `pkcs11:` (RFC 7512) and `awskms:` signer URI parsers with arbitrary
//! text. Checks, beyond "no panic": a URI holding a PIN attribute in any
//! spelling the parser would decode (`pin-value`, percent-encoded, any case)
//! is refused, and no error message ever repeats the value that followed it.
#![no_main]
use imprint_signer::awskms::KmsUri;
use imprint_signer::Pkcs11Uri;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "S3CR3Tv4lue";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for uri in [format!("pkcs11:{text}"), text.to_string()] {
        let _ = Pkcs11Uri::parse(&uri);
    }
    for need_key in [true, false] {
        let _ = KmsUri::parse(&format!("awskms:{text}"), need_key);
    }
    // The same text with a PIN planted after it as an attribute of its own: in the path
    // (`;`), or in the query (`&`) once the text has begun one (in the query `;` is an
    // ordinary character of a value, RFC 7512 pk11-query-res-avail).
    let sep = if text.contains('?') { '&' } else { ';' };
    for uri in [format!("pkcs11:{text}{sep}pin-value={SECRET}"), format!("pkcs11:token=t?{text}&pin-value={SECRET}")] {
        match Pkcs11Uri::parse(&uri) {
            Ok(u) => panic!("a URI with a PIN was accepted: {u:?}"),
            Err(e) => assert!(!e.to_string().contains(SECRET), "the PIN was echoed: {e}"),
        }
    }
});
