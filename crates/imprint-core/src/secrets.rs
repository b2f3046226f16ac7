//! What counts as a secret in configuration: one rule for the config file's
//! keys and for signer URI attributes, applied to NAMES only (a value is
//! never inspected for its text, never echoed).
//!
//! A name is compared case-insensitively with `-`, `_`, `.` and spaces
//! removed, so `pin-value`, `PIN_VALUE`, `Pin.Value` and `pinvalue` are one
//! name. Names that say *where* a secret is (`pin-source`, `password_file`)
//! are not secrets. Names are percent-decoded first (`pin%2Dvalue`).

/// Names that are secrets exactly (after normalising), with the spelling
/// messages use.
const EXACT: &[(&str, &str)] = &[
    ("pin", "pin"),
    ("pins", "pin"),
    ("userpin", "user-pin"),
    ("sopin", "so-pin"),
    ("pincode", "pin"),
    ("pass", "password"),
    ("pwd", "password"),
    ("psk", "pre-shared key"),
];

/// Names that are secrets when they contain one of these (after
/// normalising), with the spelling messages use.
const CONTAINS: &[(&str, &str)] = &[
    ("pinvalue", "pin-value"),
    ("password", "password"),
    ("passwd", "password"),
    ("passphrase", "passphrase"),
    ("sessiontoken", "session-token"),
    ("securitytoken", "security-token"),
    ("authtoken", "auth-token"),
    ("bearertoken", "bearer-token"),
    ("apitoken", "api-token"),
    ("accesskey", "access-key"),
    ("privatekey", "private-key"),
    ("secret", "secret"),
    ("apikey", "api-key"),
    ("credential", "credential"),
];

/// Names that name where a secret is kept, never the secret itself (also
/// as the end of a longer name: `supervisor_password_file`).
const WHERE: &[&str] = &["pinsource", "passwordfile"];

fn normalise(name: &str) -> String {
    // `pin%2Dvalue` is `pin-value`: decode first (invalid sequences stay as written).
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    decoded.chars().filter(|c| !matches!(c, '-' | '_' | '.' | ' ' | '\t')).flat_map(char::to_lowercase).collect()
}

/// The kind of secret a config key or URI attribute of this name would hold
/// (`"pin-value"`, `"password"`, `"secret"`, ...), in a fixed spelling that
/// messages may show instead of the name as written; `None` for a name that
/// holds no secret.
pub fn secret_word(name: &str) -> Option<&'static str> {
    let n = normalise(name);
    if WHERE.iter().any(|w| n.ends_with(w)) {
        return None;
    }
    if let Some((_, shown)) = EXACT.iter().find(|(w, _)| *w == n) {
        return Some(shown);
    }
    CONTAINS.iter().find(|(w, _)| n.contains(w)).map(|(_, shown)| *shown)
}

/// True when a config key or URI attribute of this name would hold a secret
/// (a PIN, a password, a credential, a private key).
pub fn is_secret_name(name: &str) -> bool {
    secret_word(name).is_some()
}

/// True when a value that should be a file path holds key or certificate
/// material instead (a pasted PEM block, or a long base64 run): such a value
/// is refused without being echoed.
pub fn looks_like_key_material(value: &str) -> bool {
    if value.contains("-----BEGIN") || value.contains("PRIVATE KEY") || value.contains('\n') {
        return true;
    }
    // A bare base64 blob (a DER key pasted without its armour): long, no path
    // separator, nothing but base64 characters.
    value.len() >= 64 && !value.contains('/') && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '=' | ' ' | '\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_in_every_spelling() {
        for n in [
            "pin",
            "PIN",
            "Pin",
            "pin-value",
            "pin_value",
            "PIN-VALUE",
            "pinValue",
            "password",
            "Password",
            "passwd",
            "db_password",
            "secret",
            "secret_access_key",
            "aws_secret_access_key",
            "aws_access_key_id",
            "access-key",
            "access_key",
            "AccessKeyId",
            "session-token",
            "aws_session_token",
            "private_key",
            "private-key",
            "client_secret",
            "api-key",
            "credentials",
            "so-pin",
            "user_pin",
            " pin ",
        ] {
            assert!(is_secret_name(n), "{n:?} must count as a secret name");
        }
    }

    #[test]
    fn names_that_say_where_a_secret_is_or_say_nothing_are_not_secrets() {
        for n in [
            "pin-source",
            "pin_source",
            "PIN-SOURCE",
            "password_file",
            "supervisor_password_file",
            "token",
            "object",
            "module-path",
            "key-id",
            "client_key",
            "client_cert",
            "signer",
            "batch",
            "spin",
            "pinned",
            "url",
        ] {
            assert!(!is_secret_name(n), "{n:?} must not count as a secret name");
        }
    }

    #[test]
    fn messages_use_a_fixed_spelling() {
        assert_eq!(secret_word("PIN%2Dvalue"), Some("pin-value"));
        assert_eq!(secret_word("%70%69%6E"), Some("pin"));
        assert_eq!(secret_word("Pin_Value"), Some("pin-value"));
        assert_eq!(secret_word("aws_secret_access_key"), Some("access-key"));
        assert_eq!(secret_word("passwd"), Some("password"));
    }

    #[test]
    fn key_material_is_told_from_paths() {
        assert!(looks_like_key_material("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----"));
        assert!(looks_like_key_material("-----BEGIN EC PRIVATE KEY-----"));
        assert!(looks_like_key_material("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgS3CR3T4711S3CR3T4711S3CR3T"));
        assert!(!looks_like_key_material("/etc/imprint/station-key.pem"));
        assert!(!looks_like_key_material("keys/client.key"));
        assert!(!looks_like_key_material("/run/secrets/imprint/mqtt-client-key-with-a-rather-long-name-for-the-broker.pem"));
    }
}
