//! RFC 7512 `pkcs11:` URIs.
//!
//! `pkcs11:token=Factory%20CA;object=ca-key?module-path=/usr/lib/softhsm/libsofthsm2.so`
//!
//! Path attributes (before `?`) are separated by `;`, query attributes by `&`;
//! values are percent-decoded. `id` is raw bytes (`id=%01%02`). Unknown
//! (vendor) attributes are kept but not used. An attribute whose name marks
//! a secret (`pin-value`, however written: `PIN_Value`, `pin%2Dvalue`, in the
//! path or the query) is refused by name, its value neither decoded nor
//! echoed: a PIN never lives in configuration. No error echoes a value.

use std::fmt;

use imprint_core::signer::SignerError;

/// The `type=` path attribute (CKA_CLASS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// `public`
    Public,
    /// `private`
    Private,
    /// `cert`
    Cert,
    /// `secret-key`
    SecretKey,
    /// `data`
    Data,
}

impl ObjectType {
    fn as_str(self) -> &'static str {
        match self {
            ObjectType::Public => "public",
            ObjectType::Private => "private",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed `pkcs11:` URI. Every attribute is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: token label (CK_TOKEN_INFO.label).
    pub token: Option<String>,
    /// `manufacturer`: token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: token serial number.
    pub serial: Option<String>,
    /// `model`: token model.
    pub model: Option<String>,
    /// `object`: CKA_LABEL of the key.
    pub object: Option<String>,
    /// `type`: CKA_CLASS of the object.
    pub object_type: Option<ObjectType>,
    /// `id`: CKA_ID of the key, raw bytes.
    pub id: Option<Vec<u8>>,
    /// `library-manufacturer`.
    pub library_manufacturer: Option<String>,
    /// `library-description`.
    pub library_description: Option<String>,
    /// `library-version`, e.g. "2.6".
    pub library_version: Option<String>,
    /// `slot-description`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`.
    pub slot_manufacturer: Option<String>,
    /// `slot-id`: decimal slot number. Beware: SoftHSM renumbers slots; prefer `token`.
    pub slot_id: Option<u64>,
    /// `module-path` (query): the PKCS#11 library to load.
    pub module_path: Option<String>,
    /// `module-name` (query): a library name without path or suffix.
    pub module_name: Option<String>,
    /// `pin-source` (query): a file path or `file:` URI holding the PIN.
    pub pin_source: Option<String>,
    /// Attributes this parser does not know (vendor attributes), decoded, in
    /// order: `(name, value, in_query)`.
    pub vendor: Vec<(String, Vec<u8>, bool)>,
}

fn bad(msg: impl Into<String>) -> SignerError {
    SignerError::BadUri(msg.into())
}

/// Percent-decode `s`, refusing a `%` not followed by two hex digits (the
/// `percent-encoding` crate would pass it through). `what` names the
/// attribute in errors; the text itself is never echoed.
fn percent_decode(s: &str, what: &str) -> Result<Vec<u8>, SignerError> {
    let b = s.as_bytes();
    for (i, _) in b.iter().enumerate().filter(|(_, c)| **c == b'%') {
        let ok = b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if !ok {
            return Err(bad(format!("{what}: bad percent-encoding")));
        }
    }
    Ok(percent_encoding::percent_decode_str(s).collect())
}

/// Refuse an attribute whose (decoded) name marks a secret. The message
/// names the kind of secret, never the value (nor the name as written).
fn refuse_secret(name: &str) -> Result<(), SignerError> {
    match imprint_core::secrets::secret_word(name) {
        None => Ok(()),
        Some(word) => Err(bad(format!(
            "a {word} attribute is not accepted: a PIN or credential never lives in configuration; \
             use ?pin-source=<file>, the {} environment variable or the PIN prompt",
            crate::pin::PIN_ENV_VAR
        ))),
    }
}

/// One `name=value` attribute, its name decoded and checked. `nth` (from 1)
/// and `part` ("path"/"query") locate it in errors: a malformed attribute is
/// never echoed (it may be `pin:1234`).
fn split_attr<'a>(attr: &'a str, part: &str, nth: usize) -> Result<(String, &'a str), SignerError> {
    let Some((name, raw)) = attr.split_once('=') else {
        // `pin:1234`, `pin-value 1234`: still a secret if the text before any
        // separator names one.
        let head = attr.split([':', ' ', '\t']).next().unwrap_or_default();
        refuse_secret(head)?;
        return Err(bad(format!("{part} attribute #{nth} has no '=': attributes are name=value")));
    };
    let name = String::from_utf8(percent_decode(name, &format!("the name of {part} attribute #{nth}"))?)
        .map_err(|_| bad(format!("the name of {part} attribute #{nth} is not valid UTF-8")))?;
    refuse_secret(&name)?;
    if name.is_empty() {
        return Err(bad(format!("{part} attribute #{nth} has an empty name")));
    }
    Ok((name, raw))
}

fn utf8(v: Vec<u8>, name: &str) -> Result<String, SignerError> {
    String::from_utf8(v).map_err(|_| bad(format!("attribute {name} is not valid UTF-8")))
}

/// Percent-encode `v`, leaving unreserved characters and `extra` as they are.
fn percent_encode(v: &[u8], extra: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for &c in v {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || extra.contains(&c) {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

impl Pkcs11Uri {
    /// Parse a `pkcs11:` URI. Refuses any secret-bearing attribute.
    pub fn parse(uri: &str) -> Result<Self, SignerError> {
        let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| bad("a PKCS#11 URI starts with \"pkcs11:\""))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        let mut seen: Vec<String> = Vec::new();
        // Every attribute's name is decoded and checked before any value is
        // decoded: nothing of a PIN goes further, whichever part it is in.
        let path_attrs: Vec<_> =
            path.split(';').filter(|a| !a.is_empty()).enumerate().map(|(i, a)| split_attr(a, "path", i + 1)).collect::<Result<_, _>>()?;
        let query_attrs: Vec<_> = query
            .unwrap_or_default()
            .split('&')
            .filter(|a| !a.is_empty())
            .enumerate()
            .map(|(i, a)| split_attr(a, "query", i + 1))
            .collect::<Result<_, _>>()?;
        for (name, raw) in path_attrs {
            if seen.contains(&name) {
                return Err(bad(format!("path attribute {name} appears twice")));
            }
            let v = percent_decode(raw, &format!("attribute {name}"))?;
            out.set_path_attr(&name, v)?;
            seen.push(name);
        }
        for (name, raw) in query_attrs {
            let v = percent_decode(raw, &format!("attribute {name}"))?;
            out.set_query_attr(&name, v)?;
        }
        Ok(out)
    }

    fn set_path_attr(&mut self, name: &str, v: Vec<u8>) -> Result<(), SignerError> {
        let slot = match name {
            "token" => &mut self.token,
            "manufacturer" => &mut self.manufacturer,
            "serial" => &mut self.serial,
            "model" => &mut self.model,
            "object" => &mut self.object,
            "library-manufacturer" => &mut self.library_manufacturer,
            "library-description" => &mut self.library_description,
            "library-version" => &mut self.library_version,
            "slot-description" => &mut self.slot_description,
            "slot-manufacturer" => &mut self.slot_manufacturer,
            "id" => {
                self.id = Some(v);
                return Ok(());
            }
            "type" => {
                let t = match utf8(v, name)?.as_str() {
                    "public" => ObjectType::Public,
                    "private" => ObjectType::Private,
                    "cert" => ObjectType::Cert,
                    "secret-key" => ObjectType::SecretKey,
                    "data" => ObjectType::Data,
                    _ => return Err(bad("type= must be public, private, cert, secret-key or data")),
                };
                self.object_type = Some(t);
                return Ok(());
            }
            "slot-id" => {
                let s = utf8(v, name)?;
                let n = s.parse::<u64>().map_err(|_| bad("slot-id= is not a decimal number"))?;
                self.slot_id = Some(n);
                return Ok(());
            }
            _ => {
                if name.is_empty() {
                    return Err(bad("empty attribute name"));
                }
                self.vendor.push((name.to_string(), v, false));
                return Ok(());
            }
        };
        *slot = Some(utf8(v, name)?);
        Ok(())
    }

    fn set_query_attr(&mut self, name: &str, v: Vec<u8>) -> Result<(), SignerError> {
        let slot = match name {
            "module-path" => &mut self.module_path,
            "module-name" => &mut self.module_name,
            "pin-source" => &mut self.pin_source,
            _ => {
                if name.is_empty() {
                    return Err(bad("empty attribute name"));
                }
                self.vendor.push((name.to_string(), v, true));
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(bad(format!("query attribute {name} appears twice")));
        }
        *slot = Some(utf8(v, name)?);
        Ok(())
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = SignerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Prints the URI in canonical form. It never holds a secret (secret-bearing
/// attributes are refused at parse time), so this is safe for logs and display.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PATH_OK: &[u8] = b":[]@!$'()*+,";
        const QUERY_OK: &[u8] = b":[]@!$'()*+,/?|";
        let mut path: Vec<String> = Vec::new();
        let mut text = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                path.push(format!("{name}={}", percent_encode(v.as_bytes(), PATH_OK)));
            }
        };
        text("token", &self.token);
        text("manufacturer", &self.manufacturer);
        text("serial", &self.serial);
        text("model", &self.model);
        text("library-manufacturer", &self.library_manufacturer);
        text("library-description", &self.library_description);
        text("library-version", &self.library_version);
        text("slot-description", &self.slot_description);
        text("slot-manufacturer", &self.slot_manufacturer);
        text("object", &self.object);
        if let Some(n) = self.slot_id {
            path.push(format!("slot-id={n}"));
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.as_str()));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02X}")).collect();
            path.push(format!("id={hex}"));
        }
        let mut query: Vec<String> = Vec::new();
        for (name, v) in [("module-path", &self.module_path), ("module-name", &self.module_name), ("pin-source", &self.pin_source)] {
            if let Some(v) = v {
                query.push(format!("{name}={}", percent_encode(v.as_bytes(), QUERY_OK)));
            }
        }
        for (name, v, in_query) in &self.vendor {
            if *in_query {
                query.push(format!("{name}={}", percent_encode(v, QUERY_OK)));
            } else {
                path.push(format!("{name}={}", percent_encode(v, PATH_OK)));
            }
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pkcs11Uri {
        Pkcs11Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rfc7512_empty() {
        assert_eq!(p("pkcs11:"), Pkcs11Uri::default());
    }

    #[test]
    fn rfc7512_object_and_type() {
        let u = p("pkcs11:object=my-pubkey;type=public");
        assert_eq!(u.object.as_deref(), Some("my-pubkey"));
        assert_eq!(u.object_type, Some(ObjectType::Public));
    }

    #[test]
    fn rfc7512_pin_source() {
        let u = p("pkcs11:object=my-key;type=private?pin-source=file:/etc/token");
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/token"));
        assert_eq!(u.object_type, Some(ObjectType::Private));
    }

    #[test]
    fn rfc7512_full_example() {
        let u = p("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;\
                   manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;\
                   type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=\
                   ?pin-source=file:/etc/token_pin");
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.model.as_deref(), Some("1.0"));
        assert_eq!(u.serial.as_deref(), Some(""));
        assert_eq!(u.object_type, Some(ObjectType::Cert));
        assert_eq!(u.id.as_deref(), Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..]));
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/token_pin"));
    }

    #[test]
    fn rfc7512_modules() {
        let u = p("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11");
        assert_eq!(u.module_name.as_deref(), Some("mypkcs11"));
        let u = p("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1");
        assert_eq!(u.module_path.as_deref(), Some("/mnt/libmypkcs11.so.1"));
    }

    #[test]
    fn rfc7512_library_and_slot_attributes() {
        let u = p("pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;\
                   library-description=Soft%20Token%20Library;library-version=1.23");
        assert_eq!(u.library_manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.library_description.as_deref(), Some("Soft Token Library"));
        assert_eq!(u.library_version.as_deref(), Some("1.23"));
        let u = p("pkcs11:slot-description=Sun%20Metaslot;slot-manufacturer=Sun;slot-id=7");
        assert_eq!(u.slot_description.as_deref(), Some("Sun Metaslot"));
        assert_eq!(u.slot_manufacturer.as_deref(), Some("Sun"));
        assert_eq!(u.slot_id, Some(7));
    }

    #[test]
    fn rfc7512_escapes_and_mixed_case_hex() {
        let u = p("pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;\
                   id=%01%02%03%Ba%dd%Ca%fe%04%05%06");
        assert_eq!(u.token.as_deref(), Some("My token% created by Joe"));
        assert_eq!(u.id.as_deref(), Some(&[1, 2, 3, 0xba, 0xdd, 0xca, 0xfe, 4, 5, 6][..]));
        let u = p("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert");
        assert_eq!(u.token.as_deref(), Some("A name with a substring %;"));
        let u = p("pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert");
        assert_eq!(u.token.as_deref(), Some("Name with a small A with acute: á"));
    }

    #[test]
    fn rfc7512_vendor_attributes_are_kept() {
        let u = p("pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a\
                   ?pin-source=file:/etc/token_pin&vendor-bbb=value-b");
        assert_eq!(
            u.vendor,
            vec![("vendor-aaa".to_string(), b"value-a".to_vec(), false), ("vendor-bbb".to_string(), b"value-b".to_vec(), true),]
        );
        let shown = u.to_string();
        assert!(shown.contains("vendor-aaa=value-a"), "{shown}");
        assert!(shown.contains("vendor-bbb=value-b"), "{shown}");
    }

    #[test]
    fn pin_value_is_refused_without_echoing_it() {
        let err = Pkcs11Uri::parse("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin")
            .unwrap_err();
        assert!(matches!(err, SignerError::BadUri(_)));
        let msg = err.to_string();
        assert!(msg.contains("pin-source") && msg.contains("IMPRINT_PKCS11_PIN"), "{msg}");
        assert!(!msg.contains("the-pin"));
        assert!(!format!("{err:?}").contains("the-pin"));
    }

    /// Every way an attacker (or a hurried operator) can spell a PIN into
    /// the URI: refused by the attribute's name, the value never echoed.
    #[test]
    fn secret_attributes_are_refused_by_name_in_any_spelling_and_never_echoed() {
        const V: &str = "S3CR3T-4711";
        for uri in [
            "pkcs11:token=a?pin-value=S3CR3T-4711",
            "pkcs11:token=a?PIN-VALUE=S3CR3T-4711",
            "pkcs11:token=a?Pin_Value=S3CR3T-4711",
            "pkcs11:token=a?pin%2Dvalue=S3CR3T-4711",
            "pkcs11:token=a?pin%2dvalue=S3CR3T-4711",
            "pkcs11:token=a?%70%69%6E%2D%76%61%6C%75%65=S3CR3T-4711",
            "pkcs11:token=a;pin-value=S3CR3T-4711",
            "pkcs11:token=a;pin%2Dvalue=S3CR3T-4711;object=k",
            "pkcs11:pin-value=S3CR3T-4711",
            "pkcs11:token=a?pin=S3CR3T-4711",
            "pkcs11:token=a?password=S3CR3T-4711",
            "pkcs11:token=a?passwd=S3CR3T-4711",
            "pkcs11:token=a?secret=S3CR3T-4711",
            "pkcs11:token=a?module-path=/x.so&pin-value=S3CR3T-4711",
            "pkcs11:token=a?pin:S3CR3T-4711",
            "pkcs11:token=a?pin-value:S3CR3T-4711",
            "pkcs11:token=a;pin:S3CR3T-4711",
            "pkcs11:token=a?pin-value=S3CR3T-4711&pin-value=S3CR3T-4711",
            "pkcs11:token=a?pin-value=S3CR3T%2D4711",
            "pkcs11:token=a?pin-value=%zzS3CR3T-4711",
        ] {
            let err = Pkcs11Uri::parse(uri).expect_err(uri);
            assert!(matches!(err, SignerError::BadUri(_)), "{uri}: {err:?}");
            let (shown, debug) = (err.to_string(), format!("{err:?}"));
            assert!(!shown.contains(V) && !debug.contains(V) && !shown.contains("4711"), "{uri}: {shown}");
            assert!(shown.contains("never lives in configuration"), "{uri}: {shown}");
        }
    }

    #[test]
    fn a_malformed_attribute_is_located_not_echoed() {
        for uri in [
            "pkcs11:token=a?module-path:S3CR3T-4711",
            "pkcs11:token=a;S3CR3T-4711",
            "pkcs11:token=a;object%zz=S3CR3T-4711",
            "pkcs11:type=S3CR3T-4711",
            "pkcs11:slot-id=S3CR3T-4711",
            "pkcs11:token=%FFS3CR3T-4711",
        ] {
            let err = Pkcs11Uri::parse(uri).expect_err(uri).to_string();
            assert!(!err.contains("S3CR3T"), "{uri}: {err}");
        }
        let err = Pkcs11Uri::parse("pkcs11:token=a?module-path:S3CR3T-4711").unwrap_err().to_string();
        assert!(err.contains("query attribute #1 has no '='"), "{err}");
    }

    /// pin-source names where the PIN is: a path that says "secret" is fine.
    #[test]
    fn a_pin_source_under_a_secrets_dir_is_accepted() {
        let u = p("pkcs11:token=a;object=k?pin-source=file:/run/secrets/imprint-pin");
        assert_eq!(u.pin_source.as_deref(), Some("file:/run/secrets/imprint-pin"));
        let u = p("pkcs11:token=a;object=k?PIN-SOURCE=/run/secrets/pin");
        assert_eq!(u.vendor.len(), 1, "an unknown spelling stays a vendor attribute, not a secret");
        assert!(!u.to_string().is_empty());
    }

    /// What health and the logs show never holds a secret-bearing attribute:
    /// a URI with one does not parse, so there is nothing to display.
    #[test]
    fn the_shown_uri_never_carries_a_secret_attribute() {
        let u = p("pkcs11:token=a;object=k;x-vendor=1?module-path=/x.so&pin-source=/run/secrets/p&x-q=2");
        let shown = u.to_string();
        for a in shown.split(['?', ';', '&']).skip(1) {
            let name = a.split('=').next().unwrap();
            assert!(!imprint_core::secrets::is_secret_name(name), "{shown}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "pkcs12:token=a",
            "token=a",
            "pkcs11:token",
            "pkcs11:token=a;token=b",
            "pkcs11:id=%0",
            "pkcs11:id=%zz",
            "pkcs11:type=key",
            "pkcs11:slot-id=x",
            "pkcs11:token=%FF",
            "pkcs11:?module-path=a&module-path=b",
        ] {
            assert!(matches!(Pkcs11Uri::parse(s), Err(SignerError::BadUri(_))), "{s} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "pkcs11:token=Factory%20CA;object=ca-key;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
            "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=x;type=private",
            "pkcs11:",
            "pkcs11:slot-id=3",
        ] {
            let u = p(s);
            let shown = u.to_string();
            assert_eq!(p(&shown), u, "{s} -> {shown}");
        }
        assert_eq!(
            p("pkcs11:object=ca-key;token=T;id=%01%ff?module-path=/x/y.so").to_string(),
            "pkcs11:token=T;object=ca-key;id=%01%FF?module-path=/x/y.so"
        );
    }
}
