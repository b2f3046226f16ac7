//! Token PINs: where they come from, and a type that does not leak them.
//!
//! Resolution order: a PIN the caller passes (typed at a prompt), then the
//! URI's `pin-source` file, then the `IMPRINT_PKCS11_PIN` environment variable.
//! A PIN is never read from configuration and never printed.

use std::fmt;

use imprint_core::signer::SignerError;
use zeroize::Zeroizing;

/// The environment variable a PIN may come from (service managers, tests).
pub const PIN_ENV_VAR: &str = "IMPRINT_PKCS11_PIN";

/// A token PIN. Zeroized on drop; `Debug` prints `Pin(***)`; no `Display`.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wrap a PIN (e.g. read from a prompt).
    pub fn new(pin: impl Into<String>) -> Self {
        Pin(Zeroizing::new(pin.into()))
    }

    /// The PIN itself, for handing to the token. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the PIN is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

impl From<String> for Pin {
    fn from(s: String) -> Self {
        Pin::new(s)
    }
}

/// Resolve the PIN: `explicit` (a prompt), then `pin_source` (a path or a
/// `file:` URI), then the `IMPRINT_PKCS11_PIN` environment variable.
pub fn resolve_pin(explicit: Option<Pin>, pin_source: Option<&str>) -> Result<Pin, SignerError> {
    resolve_pin_with(explicit, pin_source, |k| std::env::var(k).ok())
}

/// [`resolve_pin`] with the environment lookup injected (for tests).
pub(crate) fn resolve_pin_with(
    explicit: Option<Pin>,
    pin_source: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Pin, SignerError> {
    if let Some(pin) = explicit {
        tracing::debug!("using the PIN given by the caller");
        return Ok(pin);
    }
    if let Some(src) = pin_source {
        tracing::debug!(pin_source = src, "reading the PIN from pin-source");
        return read_pin_source(src);
    }
    if let Some(v) = env(PIN_ENV_VAR) {
        let pin = Pin::new(v);
        if !pin.is_empty() {
            tracing::debug!("using the PIN from {PIN_ENV_VAR}");
            return Ok(pin);
        }
    }
    Err(SignerError::PinRejected(format!(
        "no PIN given: type it at the prompt, add ?pin-source=<file> to the pkcs11 URI, \
         or set the {PIN_ENV_VAR} environment variable"
    )))
}

fn read_pin_source(src: &str) -> Result<Pin, SignerError> {
    let path = match src.strip_prefix("file:") {
        // file:///etc/pin (empty authority) or file:/etc/pin
        Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
        None => src,
    };
    if path.is_empty() {
        return Err(SignerError::BadUri("pin-source names no file".into()));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| SignerError::PinRejected(format!("cannot read pin-source file {path}: {e}")))?,
    );
    let body = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if body.is_empty() {
        return Err(SignerError::PinRejected(format!("pin-source file {path} is empty")));
    }
    Ok(Pin::new(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn debug_hides_the_pin() {
        let p = Pin::new("123456");
        assert_eq!(format!("{p:?}"), "Pin(***)");
        assert_eq!(format!("{:?}", Some(p)), "Some(Pin(***))");
    }

    #[test]
    fn explicit_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "file-pin\n").unwrap();
        let pin = resolve_pin_with(Some(Pin::new("typed")), Some(f.to_str().unwrap()), |_| Some("env-pin".into())).unwrap();
        assert_eq!(pin.expose(), "typed");
    }

    #[test]
    fn pin_source_path_and_file_uri_trim_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "12 34\n\n").unwrap();
        let path = f.to_str().unwrap();
        let env = |_: &str| Some("env-pin".to_string());
        assert_eq!(resolve_pin_with(None, Some(path), env).unwrap().expose(), "12 34\n");
        std::fs::write(&f, "1234\r\n").unwrap();
        let uri = format!("file://{path}");
        assert_eq!(resolve_pin_with(None, Some(&uri), no_env).unwrap().expose(), "1234");
        let uri = format!("file:{path}");
        assert_eq!(resolve_pin_with(None, Some(&uri), no_env).unwrap().expose(), "1234");
    }

    #[test]
    fn unreadable_pin_source_is_an_error_not_a_fallback() {
        let err = resolve_pin_with(None, Some("/nonexistent/imprint-pin"), |_| Some("env-pin".into())).unwrap_err();
        assert!(matches!(err, SignerError::PinRejected(_)));
        assert!(err.to_string().contains("/nonexistent/imprint-pin"));
    }

    #[test]
    fn env_is_last() {
        let pin = resolve_pin_with(None, None, |k| {
            assert_eq!(k, PIN_ENV_VAR);
            Some("4321".into())
        })
        .unwrap();
        assert_eq!(pin.expose(), "4321");
    }

    #[test]
    fn missing_pin_names_the_three_ways() {
        let err = resolve_pin_with(None, None, no_env).unwrap_err();
        assert!(matches!(err, SignerError::PinRejected(_)));
        let msg = err.to_string();
        assert!(msg.contains("prompt") && msg.contains("pin-source") && msg.contains(PIN_ENV_VAR));
        let err = resolve_pin_with(None, None, |_| Some(String::new())).unwrap_err();
        assert!(matches!(err, SignerError::PinRejected(_)));
    }
}
