//! A simulated Nordic nRF91 modem on its AT interface, as Nordic's AT
//! command reference describes the commands a provisioning host uses:
//! `AT`, `AT+CGMM`, `AT+CGSN[=1]`, `AT+CGMR`, `AT%XMODEMUUID`, `AT+CFUN`,
//! `AT+CMEE`, `AT%KEYGEN=<sec_tag>,2,0[,"<attributes>"]` (a P-256 key made
//! in the modem, a CSR, and a COSE_Sign1 attestation by the modem's own
//! per-device identity key over the CSR's SHA-256), and `AT%CMNG`
//! (write 0, list 1, delete 3; the list gives the SHA-256 of each stored
//! credential). Credential writes and KEYGEN are refused with `+CME ERROR:
//! 518` unless the modem is offline (`AT+CFUN=4` or 0), as on the real part.
//!
//! One command in, one [`ModemReply`] out, no I/O: the pty loop
//! (`sim.rs`) serves it like the native [`crate::Device`].
//!
//! Faults ([`ModemFaults`], spec items separated by commas):
//!
//! | item | effect |
//! |---|---|
//! | `urc-noise` | URCs (`+CEREG`, `%CESQ`, `%XMODEMSLEEP`) before every answer |
//! | `cme-at=K:N` | answer the K-th command (1-based) `+CME ERROR: N` without acting on it |
//! | `error-at=K` | answer the K-th command `ERROR` |
//! | `unplug-at=K` | on the K-th command, close the pty without answering |
//! | `readback-mismatch` | `%CMNG` lists a wrong SHA-256 for the client certificate |
//! | `cose-other-csr` | the attestation's digest is over another CSR |
//! | `no-cose` | KEYGEN answers the CSR without its COSE part |
//! | `stays-online` | the modem is online (CFUN=1) and `AT+CFUN=4` answers OK but it stays online (KEYGEN and writes get 518) |

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use imprint_nrf91::at;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What the modem reports for `AT+CGMM` and `AT+CGMR`.
pub const MODEL: &str = "nRF9160-SICA";
pub const FW_VERSION: &str = "mfw_nrf9160_1.3.5";
/// Its modem firmware build UUID (`AT%XMODEMUUID`).
pub const FW_BUILD_UUID: &str = "25c95751-efa4-40d4-8b4a-1dcaab81fac9";

/// The faults one simulated modem injects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModemFaults {
    pub urc_noise: bool,
    /// (K, N): the K-th command answers `+CME ERROR: N`.
    pub cme_at: Option<(u64, u16)>,
    pub error_at: Option<u64>,
    pub unplug_at: Option<u64>,
    pub readback_mismatch: bool,
    pub cose_other_csr: bool,
    pub no_cose: bool,
    pub stays_online: bool,
}

impl ModemFaults {
    /// Parse a spec (see the module docs); "" is no fault.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut f = ModemFaults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').map_or((item, None), |(k, v)| (k, Some(v)));
            let num = |v: Option<&str>| -> Result<u64, String> {
                v.and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or_else(|| format!("{item}: needs a positive number"))
            };
            match k {
                "urc-noise" => f.urc_noise = true,
                "readback-mismatch" => f.readback_mismatch = true,
                "cose-other-csr" => f.cose_other_csr = true,
                "no-cose" => f.no_cose = true,
                "stays-online" => f.stays_online = true,
                "error-at" => f.error_at = Some(num(v)?),
                "unplug-at" => f.unplug_at = Some(num(v)?),
                "cme-at" => {
                    let (k, n) = v.and_then(|v| v.split_once(':')).ok_or_else(|| format!("{item}: use cme-at=K:N"))?;
                    let k = num(Some(k))?;
                    let n: u16 = n.parse().map_err(|_| format!("{item}: N is a +CME ERROR number"))?;
                    f.cme_at = Some((k, n));
                }
                _ => return Err(format!("unknown nRF91 fault {k:?}")),
            }
        }
        Ok(f)
    }
}

/// What the modem does about one command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModemReply {
    /// The bytes that go on the wire (URCs, information lines, final result).
    pub wire: Vec<u8>,
    /// Simulated compute time before the answer starts (slow KEYGEN).
    pub busy_ms: u64,
    /// Close the pty without answering.
    pub unplug: bool,
}

/// The modem's state that tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModemSnapshot {
    pub cfun: u8,
    /// (sec_tag, type) → content as written (PEM text), or the key's SPKI for type 2.
    pub credentials: BTreeMap<(u32, u8), Vec<u8>>,
    pub imei: String,
    pub device_uuid: String,
    /// The identity key's public key (uncompressed point): what Nordic's
    /// identity service holds, here for tests to verify attestations.
    pub identity_public_key: Vec<u8>,
}

/// A simulated nRF91 modem.
pub struct Modem {
    faults: ModemFaults,
    keygen_ms: u64,
    commands: u64,
    cfun: u8,
    imei: String,
    device_uuid: [u8; 16],
    identity: EcdsaKeyPair,
    rng: SystemRandom,
    credentials: BTreeMap<(u32, u8), Vec<u8>>,
    urc_turn: u64,
}

impl std::fmt::Debug for Modem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modem").field("imei", &self.imei).field("cfun", &self.cfun).finish()
    }
}

fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl Modem {
    /// A modem whose IMEI and device UUID derive from `seed` (the simulated
    /// serial), with a fresh identity key.
    pub fn new(seed: &str, faults: ModemFaults, keygen_ms: u64) -> Result<Self, String> {
        let h = Sha256::digest(seed.as_bytes());
        let digits: String = h.iter().take(9).map(|b| char::from(b'0' + b % 10)).collect();
        let imei = format!("35265610{}", &digits[..7]);
        let mut device_uuid = [0u8; 16];
        device_uuid.copy_from_slice(&h[16..32]);
        device_uuid[6] = (device_uuid[6] & 0x0f) | 0x40;
        device_uuid[8] = (device_uuid[8] & 0x3f) | 0x80;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| e.to_string())?;
        let identity = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).map_err(|e| e.to_string())?;
        // `stays-online`: the application firmware has the modem up (CFUN=1) and keeps it there.
        let cfun = if faults.stays_online { 1 } else { 0 };
        Ok(Modem { faults, keygen_ms, commands: 0, cfun, imei, device_uuid, identity, rng, credentials: BTreeMap::new(), urc_turn: 0 })
    }

    pub fn imei(&self) -> &str {
        &self.imei
    }

    pub fn snapshot(&self) -> ModemSnapshot {
        ModemSnapshot {
            cfun: self.cfun,
            credentials: self.credentials.clone(),
            imei: self.imei.clone(),
            device_uuid: uuid_text(&self.device_uuid),
            identity_public_key: self.identity.public_key().as_ref().to_vec(),
        }
    }

    /// After an `unplug-at` unplug the modem comes back without the fault.
    pub fn clear_unplug_fault(&mut self) {
        self.faults.unplug_at = None;
    }

    fn offline(&self) -> bool {
        self.cfun == 0 || self.cfun == 4
    }

    /// One complete command line (without its final CR LF).
    pub fn handle(&mut self, command: &str) -> ModemReply {
        self.commands += 1;
        let n = self.commands;
        if self.faults.unplug_at == Some(n) {
            return ModemReply { unplug: true, ..Default::default() };
        }
        let mut out = String::new();
        if self.faults.urc_noise {
            self.urc_turn += 1;
            out.push_str(match self.urc_turn % 3 {
                0 => "\r\n+CEREG: 2,\"76C1\",\"0102DA04\",7\r\n",
                1 => "\r\n%CESQ: 54,2,16,2\r\n",
                _ => "\r\n%XMODEMSLEEP: 1,86399999\r\n",
            });
        }
        if let Some((_, code)) = self.faults.cme_at.filter(|(k, _)| *k == n) {
            out.push_str(&format!("\r\n+CME ERROR: {code}\r\n"));
            return ModemReply { wire: out.into_bytes(), ..Default::default() };
        }
        if self.faults.error_at == Some(n) {
            out.push_str("\r\nERROR\r\n");
            return ModemReply { wire: out.into_bytes(), ..Default::default() };
        }
        let mut busy_ms = 0;
        let body = match self.execute(command.trim(), &mut busy_ms) {
            Ok(lines) => {
                let mut b: String = lines.iter().map(|l| format!("\r\n{l}")).collect();
                b.push_str("\r\nOK\r\n");
                b
            }
            Err(Some(code)) => format!("\r\n+CME ERROR: {code}\r\n"),
            Err(None) => "\r\nERROR\r\n".to_string(),
        };
        out.push_str(&body);
        ModemReply { wire: out.into_bytes(), busy_ms, unplug: false }
    }

    /// Ok(information lines) or Err(Some(CME number) | None for ERROR).
    fn execute(&mut self, cmd: &str, busy_ms: &mut u64) -> Result<Vec<String>, Option<u16>> {
        let upper = cmd.to_ascii_uppercase();
        match upper.as_str() {
            "AT" | "AT+CMEE=1" | "ATE0" => return Ok(vec![]),
            "AT+CGMM" => return Ok(vec![MODEL.into()]),
            "AT+CGMR" => return Ok(vec![FW_VERSION.into()]),
            "AT+CGSN" => return Ok(vec![self.imei.clone()]),
            "AT+CGSN=1" => return Ok(vec![format!("+CGSN: \"{}\"", self.imei)]),
            "AT%XMODEMUUID" => return Ok(vec![format!("%XMODEMUUID: {FW_BUILD_UUID}")]),
            "AT+CFUN?" => return Ok(vec![format!("+CFUN: {}", self.cfun)]),
            _ => {}
        }
        if let Some(v) = upper.strip_prefix("AT+CFUN=") {
            let mode: u8 = v.trim().parse().map_err(|_| None)?;
            if ![0, 1, 4].contains(&mode) {
                return Err(None);
            }
            if !(mode == 4 && self.faults.stays_online) {
                self.cfun = mode;
            }
            return Ok(vec![]);
        }
        if let Some(args) = cmd.get(..10).filter(|p| p.eq_ignore_ascii_case("AT%KEYGEN=")).and(cmd.get(10..)) {
            return self.keygen(args, busy_ms);
        }
        if let Some(args) = cmd.get(..8).filter(|p| p.eq_ignore_ascii_case("AT%CMNG=")).and(cmd.get(8..)) {
            return self.cmng(args);
        }
        Err(None)
    }

    fn keygen(&mut self, args: &str, busy_ms: &mut u64) -> Result<Vec<String>, Option<u16>> {
        let f = at::fields(args).ok_or(None)?;
        let tag: u32 = f.first().and_then(|t| t.parse().ok()).ok_or(None)?;
        if f.get(1).map(String::as_str) != Some("2") || f.get(2).is_some_and(|c| c.as_str() != "0") {
            return Err(None);
        }
        if !self.offline() {
            return Err(Some(518));
        }
        *busy_ms = self.keygen_ms;
        // Subject: the attributes given (CN=... only here), else CN=<device UUID>.
        let cn = f
            .get(3)
            .and_then(|a| a.split(',').find_map(|kv| kv.trim().strip_prefix("CN=").map(str::to_string)))
            .unwrap_or_else(|| uuid_text(&self.device_uuid));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|_| Some(523))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).map_err(|_| Some(523))?.der().to_vec();
        let mut covered = csr.clone();
        if self.faults.cose_other_csr {
            if let Some(b) = covered.last_mut() {
                *b ^= 0x01;
            }
        }
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&self.rng, &mut nonce).map_err(|_| Some(523))?;
        let payload = imprint_nrf91::attest::csr_message_payload(self.device_uuid, tag, Sha256::digest(&covered).into(), nonce);
        let (identity, rng) = (&self.identity, &self.rng);
        let cose = imprint_nrf91::attest::sign1(payload, |tbs| identity.sign(rng, tbs).map(|s| s.as_ref().to_vec()).unwrap_or_default());
        self.credentials.insert((tag, 2), rcgen::PublicKeyData::subject_public_key_info(&key));
        let answer = if self.faults.no_cose {
            URL_SAFE_NO_PAD.encode(&csr)
        } else {
            format!("{}.{}", URL_SAFE_NO_PAD.encode(&csr), URL_SAFE_NO_PAD.encode(&cose))
        };
        Ok(vec![format!("%KEYGEN: \"{answer}\"")])
    }

    fn cmng(&mut self, args: &str) -> Result<Vec<String>, Option<u16>> {
        let f = at::fields(args).ok_or(None)?;
        let op = f.first().map(String::as_str).ok_or(None)?;
        let tag = |i: usize| -> Result<u32, Option<u16>> { f.get(i).and_then(|t| t.parse().ok()).ok_or(None) };
        match op {
            "0" => {
                let (t, ty) = (tag(1)?, f.get(2).and_then(|t| t.parse::<u8>().ok()).ok_or(None)?);
                let content = f.get(3).filter(|c| !c.is_empty()).ok_or(None)?;
                if !self.offline() {
                    return Err(Some(518));
                }
                if ty == 2 && self.credentials.contains_key(&(t, 2)) {
                    return Err(Some(519));
                }
                self.credentials.insert((t, ty), content.as_bytes().to_vec());
                Ok(vec![])
            }
            "1" => {
                let only = f.get(1).map(|_| tag(1)).transpose()?;
                Ok(self
                    .credentials
                    .iter()
                    .filter(|((t, _), _)| only.is_none_or(|o| o == *t))
                    .map(|((t, ty), content)| {
                        let mut sha = hex::encode_upper(Sha256::digest(content));
                        if self.faults.readback_mismatch && *ty == 1 {
                            sha = hex::encode_upper(Sha256::digest(b"not what was written"));
                        }
                        format!("%CMNG: {t},{ty},\"{sha}\"")
                    })
                    .collect())
            }
            "3" => {
                let (t, ty) = (tag(1)?, f.get(2).and_then(|t| t.parse::<u8>().ok()).ok_or(None)?);
                if !self.offline() {
                    return Err(Some(518));
                }
                self.credentials.remove(&(t, ty)).map(|_| vec![]).ok_or(Some(513))
            }
            _ => Err(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: &ModemReply) -> Vec<String> {
        String::from_utf8_lossy(&r.wire).split("\r\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn keygen_is_refused_while_the_modem_is_online_and_attested_when_offline() {
        let mut m = Modem::new("NRF-1", ModemFaults::default(), 0).unwrap();
        assert_eq!(lines(&m.handle("AT+CFUN=1")), ["OK"]);
        assert_eq!(lines(&m.handle("AT%KEYGEN=7,2,0")), ["+CME ERROR: 518"]);
        assert_eq!(lines(&m.handle("AT+CFUN=4")), ["OK"]);
        let l = lines(&m.handle("AT%KEYGEN=7,2,0,\"CN=352656100000000\""));
        assert_eq!(l.len(), 2, "{l:?}");
        let body = l[0].strip_prefix("%KEYGEN: ").unwrap();
        let (csr, cose, _) = imprint_nrf91::attest::split_keygen(body).unwrap();
        let a = imprint_nrf91::attest::check(&csr, &cose, 7).unwrap();
        assert_eq!(a.device_uuid, m.snapshot().device_uuid);
        // The signature is the identity key's over the Sig_structure.
        let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, m.snapshot().identity_public_key);
        pk.verify(&a.tbs, &a.signature).unwrap();
    }

    #[test]
    fn cmng_lists_the_sha256_of_what_was_written() {
        let mut m = Modem::new("NRF-2", ModemFaults::default(), 0).unwrap();
        m.handle("AT+CFUN=4");
        assert_eq!(lines(&m.handle("AT%CMNG=0,7,1,\"-----BEGIN X-----\nAA\n-----END X-----\n\"")), ["OK"]);
        let l = lines(&m.handle("AT%CMNG=1,7"));
        let want = hex::encode_upper(Sha256::digest(b"-----BEGIN X-----\nAA\n-----END X-----\n"));
        assert_eq!(l, [format!("%CMNG: 7,1,\"{want}\""), "OK".to_string()]);
        assert_eq!(lines(&m.handle("AT%CMNG=3,7,0")), ["+CME ERROR: 513"]);
    }

    #[test]
    fn fault_specs_parse_and_unknown_ones_are_refused() {
        let f = ModemFaults::parse("urc-noise, cme-at=6:514,unplug-at=3").unwrap();
        assert!(f.urc_noise);
        assert_eq!(f.cme_at, Some((6, 514)));
        assert_eq!(f.unplug_at, Some(3));
        assert!(ModemFaults::parse("cme-at=6").is_err());
        assert!(ModemFaults::parse("bogus").is_err());
    }
}
