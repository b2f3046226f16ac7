//! Content hashes of records as the station holds them. The center stores
//! the hash the station computed; a record that arrives again is compared by
//! (version, hash). Every field is length-prefixed and tagged, so no two
//! different contents encode alike. The version is not hashed.

use imprint_store::{AttemptRow, CertRow, StepRecord, Timestamp};
use sha2::{Digest, Sha256};

struct H(Sha256);

impl H {
    fn new(kind: &str, station: &str) -> H {
        let mut h = H(Sha256::new());
        h.text(kind);
        h.text(station);
        h
    }
    fn raw(&mut self, tag: u8, b: &[u8]) {
        self.0.update([tag]);
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn text(&mut self, s: &str) {
        self.raw(1, s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => self.0.update([0]),
        }
    }
    /// A time as the instant it names, at PostgreSQL's precision (µs), so
    /// the hash does not depend on how the text spells it.
    fn time(&mut self, s: &str) {
        match Timestamp::parse(s) {
            Some(t) => self.instant(t),
            None => self.text(s),
        }
    }
    /// A typed time: the same bytes as [`H::time`] of its text.
    fn instant(&mut self, t: Timestamp) {
        self.raw(
            4,
            &(t.get().unix_timestamp_nanos().div_euclid(1000)).to_be_bytes(),
        );
    }
    fn opt_instant(&mut self, t: Option<Timestamp>) {
        match t {
            Some(t) => self.instant(t),
            None => self.0.update([0]),
        }
    }
    fn int(&mut self, v: i64) {
        self.raw(2, &v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.raw(3, b);
    }
    fn opt_bytes(&mut self, b: &Option<Vec<u8>>) {
        match b {
            Some(b) => self.bytes(b),
            None => self.0.update([0]),
        }
    }
    fn done(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Hash of an attempt as synced by `station`.
pub fn attempt(station: &str, a: &AttemptRow) -> [u8; 32] {
    let mut h = H::new("attempt", station);
    h.text(&a.id);
    h.text(&a.port);
    h.instant(a.started_at);
    h.opt_instant(a.finished_at);
    h.text(a.status.as_str());
    let (stage, code) = (
        a.stage.as_ref().map(|v| v.as_str()),
        a.code.as_ref().map(|v| v.as_str()),
    );
    for f in [stage, code, a.reason.as_deref(), a.hint.as_deref()] {
        h.opt(f);
    }
    h.int(a.retryable.map(i64::from).unwrap_or(-1));
    for f in [
        &a.device_serial,
        &a.model,
        &a.hw_rev,
        &a.fw_version,
        &a.fw_hash,
        &a.chip_uid,
        &a.batch,
        &a.spki_sha256,
        &a.certificate_id,
    ] {
        h.opt(f.as_deref());
    }
    h.int(i64::from(a.resumed));
    h.int(a.bytes_to_device);
    h.int(a.bytes_from_device);
    h.done()
}

/// Hash of a step as synced by `station`.
pub fn step(station: &str, s: &StepRecord) -> [u8; 32] {
    let mut h = H::new("step", station);
    h.text(&s.attempt_id);
    h.int(s.n);
    h.time(&s.at);
    h.text(&s.stage);
    h.text(&s.kind);
    h.text(&s.detail);
    h.done()
}

/// Hash of a certificate row as synced by `station` (the CA chain is not synced).
pub fn certificate(station: &str, c: &CertRow) -> [u8; 32] {
    let mut h = H::new("certificate", station);
    h.text(&c.id);
    h.text(&c.attempt_id);
    h.text(&c.device_serial);
    h.text(&c.issuer);
    h.text(&c.serial_hex);
    h.text(&c.spki_sha256);
    h.bytes(&c.spki_der);
    h.instant(c.not_before);
    h.instant(c.not_after);
    h.text(c.status.as_str());
    h.opt_bytes(&c.cert_der);
    h.opt(c.fingerprint_sha256.as_deref());
    h.instant(c.created_at);
    h.opt_instant(c.issued_at);
    h.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(detail: &str, stage: &str) -> StepRecord {
        StepRecord { attempt_id: "a".into(), n: 1, at: "t".into(), stage: stage.into(), kind: "k".into(), detail: detail.into() }
    }

    #[test]
    fn field_boundaries_and_station_change_the_hash() {
        assert_ne!(step("S", &s("ab", "c")), step("S", &s("a", "bc")));
        assert_ne!(step("S", &s("a", "b")), step("T", &s("a", "b")));
        assert_eq!(step("S", &s("a", "b")), step("S", &s("a", "b")));
    }

    /// The hash input of a typed row is byte-identical to the one computed
    /// from the stored text before rows were typed: the expected value was
    /// computed independently from the text form (length-prefixed tagged
    /// fields, times as µs instants), including a code this build does not
    /// know (kept verbatim as `Unrecognized`).
    #[test]
    fn typed_attempt_rows_hash_as_their_stored_text_did() {
        use imprint_store::{AttemptRow, Recorded};
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let a = AttemptRow {
            id: "0190a1b2-0000-7000-8000-000000000001".into(),
            port: "/dev/ttyUSB0".into(),
            started_at: t("2026-01-02T03:04:05.678Z"),
            finished_at: Some(t("2026-01-02T03:04:06.000Z")),
            status: Recorded::from_text("failed".into()),
            stage: Some(Recorded::from_text("keygen".into())),
            code: Some(Recorded::from_text("connect_dns".into())),
            reason: Some("the reason".into()),
            hint: Some("the hint".into()),
            retryable: Some(true),
            device_serial: Some("SN1".into()),
            model: Some("M1".into()),
            hw_rev: None,
            fw_version: Some("1.0".into()),
            fw_hash: None,
            chip_uid: None,
            batch: Some("B1".into()),
            spki_sha256: None,
            certificate_id: None,
            resumed: false,
            bytes_to_device: 10,
            bytes_from_device: 20,
        };
        assert_eq!(hex::encode(attempt("ST-1", &a)), "7e74ec9a908394500568fcea2674688a56c8b2209864f0c16d2831437ce1f307");
    }

    #[test]
    fn times_hash_as_instants_not_as_spellings() {
        let at = |t: &str| StepRecord { at: t.into(), ..s("a", "b") };
        assert_eq!(step("S", &at("2036-01-01T00:00:00Z")), step("S", &at("2036-01-01T00:00:00.000Z")));
        assert_ne!(step("S", &at("2036-01-01T00:00:00Z")), step("S", &at("2036-01-01T00:00:00.001Z")));
    }
}
