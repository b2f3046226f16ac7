//! Fault injection: what a misbehaving board or link does wrong.
//!
//! A fault spec is a comma-separated list of items (whitespace around items
//! is ignored, an empty spec means "no faults"):
//!
//! | item | effect |
//! |---|---|
//! | `unplug-at=N` | on the N-th valid request (1-based) close the pty without answering |
//! | `replug-after-ms=M` | after such an unplug, come back on a new pty after M ms, state intact |
//! | `noise` | 1-3 console lines (boot log, non-UTF-8 bytes, a fake marker) before every answer |
//! | `oversized` / `oversized-at=N` | a 1500-byte line instead of every answer / the N-th answer |
//! | `bad-crc` / `bad-crc-at=N` | every answer / the N-th answer with a wrong CRC |
//! | `busy-at=N` | answer the N-th request `503 BUSY` without acting on it (firmware erasing flash) |
//! | `slow-ms=X` | every answer X ms late |
//! | `silent` | never answer |
//! | `wrong-serial-csr` | CSR subject names another serial |
//! | `other-key-csr` | CSR over, and signed by, a different fresh key |
//! | `bad-csr-sig` | CSR signature does not verify (one byte flipped) |
//! | `stale-nonce` | CSR challengePassword carries a different nonce |
//! | `weak-key` | KEYGEN makes an RSA-1024 key; the CSR is sha256WithRSAEncryption |
//! | `bad-proof` | PROVE signs with a different key |
//! | `mqtt-foreign-cert` | CONNECT presents a certificate for the device key from a CA the device made itself |
//! | `mqtt-expired-cert` | CONNECT presents an expired certificate (from the simulator's expiry-test CA, `mqtt::expiry_test_ca_pem`) |
//! | `mqtt-wrong-key` | CONNECT presents the installed certificate but signs the TLS handshake with another key |
//! | `fake-lock` | LOCK commit answers `state=locked` but the lock is never persisted: the device stays unlocked (QA finds it) |

use std::fmt;
use std::str::FromStr;

/// The faults one simulated device injects. `Faults::default()` is a
/// well-behaved device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Close the pty on receiving the N-th valid request (1-based), unanswered.
    pub unplug_at: Option<u64>,
    /// After an `unplug_at` unplug, re-appear on a new pty after this many ms.
    pub replug_after_ms: Option<u64>,
    /// Console lines before every answer.
    pub noise: bool,
    /// A 1500-byte line instead of every answer.
    pub oversized: bool,
    /// A 1500-byte line instead of the answer to the N-th request.
    pub oversized_at: Option<u64>,
    /// Every answer with a wrong CRC.
    pub bad_crc: bool,
    /// The answer to the N-th request with a wrong CRC.
    pub bad_crc_at: Option<u64>,
    /// Answer the N-th request 503 BUSY without acting on it.
    pub busy_at: Option<u64>,
    /// Extra delay before every answer.
    pub slow_ms: u64,
    /// Never answer anything.
    pub silent: bool,
    /// CSR subject CN/serialNumber of another serial.
    pub wrong_serial_csr: bool,
    /// CSR over and signed by a different key than KEYGEN returned.
    pub other_key_csr: bool,
    /// CSR whose signature does not verify.
    pub bad_csr_sig: bool,
    /// KEYGEN makes an RSA-1024 key.
    pub weak_key: bool,
    /// CSR challengePassword of a different nonce.
    pub stale_nonce: bool,
    /// PROVE signs with a different key.
    pub bad_proof: bool,
    /// CONNECT presents a certificate from a CA the device made itself.
    pub mqtt_foreign_cert: bool,
    /// CONNECT presents an expired certificate (expiry-test CA).
    pub mqtt_expired_cert: bool,
    /// CONNECT signs the TLS handshake with a key that does not match the certificate.
    pub mqtt_wrong_key: bool,
    /// LOCK commit answers success without locking.
    pub fake_lock: bool,
}

/// A fault spec that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad fault spec {item:?}: {why}")]
pub struct FaultParseError {
    pub item: String,
    pub why: String,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Parse a comma-separated spec such as `unplug-at=7,replug-after-ms=500`.
    pub fn parse(spec: &str) -> Result<Self, FaultParseError> {
        let mut f = Faults::default();
        f.apply(spec)?;
        Ok(f)
    }

    /// Add the items of `spec` to these faults (later items win).
    pub fn apply(&mut self, spec: &str) -> Result<(), FaultParseError> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            let err = |why: &str| FaultParseError { item: item.to_string(), why: why.to_string() };
            let num = |min: u64| -> Result<u64, FaultParseError> {
                let v = value.ok_or_else(|| err("needs a value (name=N)"))?;
                let n: u64 = v.parse().map_err(|_| err("value is not a number"))?;
                if n < min {
                    return Err(err(&format!("value must be at least {min}")));
                }
                Ok(n)
            };
            let flag = || -> Result<bool, FaultParseError> {
                match value {
                    None | Some("1") | Some("true") | Some("on") => Ok(true),
                    Some("0") | Some("false") | Some("off") => Ok(false),
                    Some(_) => Err(err("takes no value")),
                }
            };
            match name {
                "unplug-at" => self.unplug_at = Some(num(1)?),
                "replug-after-ms" => self.replug_after_ms = Some(num(0)?),
                "noise" => self.noise = flag()?,
                "oversized" => self.oversized = flag()?,
                "oversized-at" => self.oversized_at = Some(num(1)?),
                "bad-crc" => self.bad_crc = flag()?,
                "bad-crc-at" => self.bad_crc_at = Some(num(1)?),
                "busy-at" => self.busy_at = Some(num(1)?),
                "slow-ms" => self.slow_ms = num(0)?,
                "silent" => self.silent = flag()?,
                "wrong-serial-csr" => self.wrong_serial_csr = flag()?,
                "other-key-csr" => self.other_key_csr = flag()?,
                "bad-csr-sig" => self.bad_csr_sig = flag()?,
                "weak-key" => self.weak_key = flag()?,
                "stale-nonce" => self.stale_nonce = flag()?,
                "bad-proof" => self.bad_proof = flag()?,
                "mqtt-foreign-cert" => self.mqtt_foreign_cert = flag()?,
                "mqtt-expired-cert" => self.mqtt_expired_cert = flag()?,
                "mqtt-wrong-key" => self.mqtt_wrong_key = flag()?,
                "fake-lock" => self.fake_lock = flag()?,
                _ => return Err(err("unknown fault (see imprint-devsim --help)")),
            }
        }
        Ok(())
    }

    /// True when no fault is set.
    pub fn is_none(&self) -> bool {
        *self == Faults::default()
    }

    /// Every fault name this parser accepts, for help texts.
    pub const NAMES: &'static [&'static str] = &[
        "unplug-at=N",
        "replug-after-ms=M",
        "noise",
        "oversized",
        "oversized-at=N",
        "bad-crc",
        "bad-crc-at=N",
        "busy-at=N",
        "slow-ms=X",
        "silent",
        "wrong-serial-csr",
        "other-key-csr",
        "bad-csr-sig",
        "weak-key",
        "stale-nonce",
        "bad-proof",
        "mqtt-foreign-cert",
        "mqtt-expired-cert",
        "mqtt-wrong-key",
        "fake-lock",
    ];
}

impl FromStr for Faults {
    type Err = FaultParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Faults::parse(s)
    }
}

/// The canonical spec (parses back to the same value); empty for no faults.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        let mut num = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                items.push(format!("{name}={v}"));
            }
        };
        num("unplug-at", self.unplug_at);
        num("replug-after-ms", self.replug_after_ms);
        num("oversized-at", self.oversized_at);
        num("bad-crc-at", self.bad_crc_at);
        num("busy-at", self.busy_at);
        num("slow-ms", (self.slow_ms > 0).then_some(self.slow_ms));
        for (on, name) in [
            (self.noise, "noise"),
            (self.oversized, "oversized"),
            (self.bad_crc, "bad-crc"),
            (self.silent, "silent"),
            (self.wrong_serial_csr, "wrong-serial-csr"),
            (self.other_key_csr, "other-key-csr"),
            (self.bad_csr_sig, "bad-csr-sig"),
            (self.weak_key, "weak-key"),
            (self.stale_nonce, "stale-nonce"),
            (self.bad_proof, "bad-proof"),
            (self.mqtt_foreign_cert, "mqtt-foreign-cert"),
            (self.mqtt_expired_cert, "mqtt-expired-cert"),
            (self.mqtt_wrong_key, "mqtt-wrong-key"),
        ] {
            if on {
                items.push(name.to_string());
            }
        }
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_item_and_round_trips() {
        let spec = "unplug-at=7,replug-after-ms=500,oversized-at=3,bad-crc-at=3,busy-at=4,slow-ms=2000,noise,oversized,bad-crc,silent,wrong-serial-csr,other-key-csr,bad-csr-sig,weak-key,stale-nonce,bad-proof,mqtt-foreign-cert,mqtt-expired-cert,mqtt-wrong-key";
        let f = Faults::parse(spec).unwrap();
        assert_eq!(f.unplug_at, Some(7));
        assert_eq!(f.replug_after_ms, Some(500));
        assert_eq!(f.slow_ms, 2000);
        assert!(f.noise && f.weak_key && f.bad_proof);
        assert!(f.mqtt_foreign_cert && f.mqtt_expired_cert && f.mqtt_wrong_key);
        assert_eq!(Faults::parse(&f.to_string()).unwrap(), f);
        assert_eq!(Faults::parse(" noise , ,bad-crc-at=2 ").unwrap().bad_crc_at, Some(2));
        assert!(Faults::parse("").unwrap().is_none());
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["unplug-at", "unplug-at=x", "unplug-at=0", "noise=3", "teleport", "slow-ms=-1"] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
    }
}
