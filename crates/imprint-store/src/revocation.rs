//! Revocation of certificates and the local CRL number.
//!
//! [`Store::revoke`] selects the certificates and revokes each one that is
//! `issued` in **one writer transaction**: the row's status, time, reason,
//! comment and operator, its outbox row (so the change syncs), and a
//! `revocation` audit entry that anchors the changed row again (so `audit
//! verify` sees a revoked certificate as changed by the trail, not behind
//! its back). A revoked certificate never changes again (trigger
//! `certificates_revocation_is_final`, migrations/sqlite/0006_revocation.sql).

use crate::audit::{append_in, NewEntry};
use crate::outbox::{enqueue, Entity, RecordKey};
use crate::records::CertRow;
use crate::synced::SyncedRow;
use crate::types::{AuditKind, CertStatus};
use crate::{now_text, Store, StoreError};
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};

/// Which certificates a revocation is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSelector {
    /// Every certificate issued to this device serial.
    DeviceSerial(String),
    /// The certificate with this serial (hex, any case).
    CertSerial(String),
    /// Every certificate issued by an attempt of this work order / batch.
    Batch(String),
    /// Every certificate issued at or after `since` and before `until`
    /// (stored-time text; either may be open).
    IssuedBetween { since: Option<String>, until: Option<String> },
}

impl CertSelector {
    /// The selector as words (audit detail, messages).
    pub fn describe(&self) -> String {
        match self {
            CertSelector::DeviceSerial(s) => format!("device {s}"),
            CertSelector::CertSerial(s) => format!("certificate serial {}", s.to_ascii_lowercase()),
            CertSelector::Batch(b) => format!("work order {b}"),
            CertSelector::IssuedBetween { since, until } => {
                format!("issued from {} until {}", since.as_deref().unwrap_or("the beginning"), until.as_deref().unwrap_or("now"))
            }
        }
    }

    fn condition(&self) -> (String, Vec<String>) {
        let base = format!("SELECT {} FROM certificates c", CertRow::select("c"));
        match self {
            CertSelector::DeviceSerial(s) => (format!("{base} WHERE c.device_serial = ?1"), vec![s.clone()]),
            CertSelector::CertSerial(s) => {
                let hex = s.trim().trim_start_matches("0x").to_ascii_lowercase().replace(':', "");
                (format!("{base} WHERE c.serial_hex = ?1"), vec![hex])
            }
            CertSelector::Batch(b) => (format!("{base} JOIN attempts a ON a.id = c.attempt_id WHERE a.batch = ?1"), vec![b.clone()]),
            CertSelector::IssuedBetween { since, until } => {
                let mut sql = format!("{base} WHERE c.issued_at IS NOT NULL");
                let mut args = Vec::new();
                if let Some(s) = since {
                    args.push(s.clone());
                    sql.push_str(&format!(" AND c.issued_at >= ?{}", args.len()));
                }
                if let Some(u) = until {
                    args.push(u.clone());
                    sql.push_str(&format!(" AND c.issued_at < ?{}", args.len()));
                }
                (sql, args)
            }
        }
    }
}

/// What to record with each revoked certificate.
#[derive(Clone, Debug)]
pub struct Revocation {
    /// The reason's stored text (`imprint_core::crl::RevocationReason::as_str`).
    pub reason: String,
    pub comment: Option<String>,
    pub operator: Option<String>,
}

/// What [`Store::revoke`] did.
#[derive(Clone, Debug, Default)]
pub struct RevokeOutcome {
    /// Revoked now (rows as they are after the change).
    pub revoked: Vec<CertRow>,
    /// Revoked before: left as they were.
    pub already: Vec<CertRow>,
    /// Journaled but not issued (`signing`), or a status this build does
    /// not know (a newer station's): left as they are.
    pub not_issued: Vec<CertRow>,
}

/// A revoked certificate for a CRL, and whether the center has its revocation yet.
#[derive(Clone, Debug)]
pub struct RevokedCert {
    pub cert: CertRow,
    /// The revocation is still in the outbox (not at the center yet).
    pub pending_sync: bool,
}

fn select(t: &rusqlite::Connection, sel: &CertSelector) -> Result<Vec<CertRow>, StoreError> {
    let (sql, args) = sel.condition();
    let mut s = t.prepare(&format!("{sql} ORDER BY c.created_at, c.id"))?;
    let rows = s.query_map(params_from_iter(args.iter()), CertRow::read)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn revoke_in(t: &Transaction<'_>, station: &str, sel: &CertSelector, r: &Revocation) -> Result<RevokeOutcome, StoreError> {
    let mut out = RevokeOutcome::default();
    let at = now_text();
    for c in select(t, sel)? {
        match c.status.known() {
            Some(CertStatus::Revoked) => out.already.push(c),
            // A superseded certificate (renewed) is still valid until it expires: it can be revoked too.
            Some(CertStatus::Issued | CertStatus::Superseded) => {
                let n = t.execute(
                    "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = ?3, revocation_comment = ?4,
                         revoked_by = ?5 WHERE id = ?1 AND status IN ('issued', 'superseded')",
                    params![c.id, at, r.reason, r.comment, r.operator],
                )?;
                if n != 1 {
                    continue;
                }
                enqueue(t, Entity::Certificate, &c.id, 0)?;
                let detail = serde_json::json!({
                    "certificate_serial": c.serial_hex,
                    "device_serial": c.device_serial,
                    "issuer": c.issuer,
                    "reason": r.reason,
                    "comment": r.comment,
                    "selected_by": sel.describe(),
                });
                let entry = NewEntry {
                    operator: r.operator.clone(),
                    kind: AuditKind::Revocation,
                    subject: Some(c.id.clone()),
                    detail,
                    anchor: vec![RecordKey { entity: Entity::Certificate, id: c.id.clone(), step_no: 0 }],
                };
                append_in(t, station, &entry)?;
                let after =
                    t.query_row(&format!("SELECT {} FROM certificates c WHERE id = ?1", CertRow::select("c")), [&c.id], CertRow::read)?;
                out.revoked.push(after);
            }
            _ => out.not_issued.push(c),
        }
    }
    Ok(out)
}

impl Store {
    /// The certificates a selector names, oldest first.
    pub fn select_certificates(&self, sel: &CertSelector) -> Result<Vec<CertRow>, StoreError> {
        let sel = sel.clone();
        self.read(move |c| select(c, &sel))
    }

    /// Revoke every issued certificate the selector names, all in one
    /// transaction, each with its outbox row and a `revocation` audit entry
    /// anchoring the revoked row. Revoked ones stay as they are.
    pub fn revoke(&self, sel: &CertSelector, r: &Revocation) -> Result<RevokeOutcome, StoreError> {
        let (sel, r) = (sel.clone(), r.clone());
        let station = self.station_id();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let out = revoke_in(t, &station, &sel, &r)?;
            let _ = tx.send(out);
            Ok(())
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Every revoked certificate of `issuer` (DN text as recorded), oldest
    /// revocation first, each saying whether the center has it yet.
    pub fn revoked_certificates(&self, issuer: &str) -> Result<Vec<RevokedCert>, StoreError> {
        let issuer = issuer.to_string();
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let wm: i64 = tx
                .query_row("SELECT value FROM station_meta WHERE key = ?1", [crate::outbox::META_WATERMARK], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let cols = CertRow::select("c");
            let mut s = tx.prepare(&format!(
                "SELECT {cols}, EXISTS (SELECT 1 FROM outbox o WHERE o.entity = 'certificate' AND o.entity_id = c.id
                     AND o.state = 'pending' AND o.seq > ?2)
                 FROM certificates c WHERE c.status = 'revoked' AND c.issuer = ?1 ORDER BY c.revoked_at, c.id"
            ))?;
            let n = CertRow::TABLE.width();
            let rows = s
                .query_map(params![issuer, wm], |r| Ok(RevokedCert { cert: CertRow::read(r)?, pending_sync: r.get::<_, i64>(n)? != 0 }))?
                .collect::<Result<Vec<_>, _>>()?;
            drop(s);
            tx.commit()?;
            Ok(rows)
        })
    }

    /// The newest certificate recorded for a device serial, if any.
    pub fn latest_cert_for_device(&self, device_serial: &str) -> Result<Option<CertRow>, StoreError> {
        let k = device_serial.to_string();
        self.read(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {} FROM certificates c WHERE device_serial = ?1 ORDER BY created_at DESC, id DESC LIMIT 1",
                    CertRow::select("c")
                ),
                [k],
                CertRow::read,
            )
            .optional()?)
        })
    }

    /// The last CRL number this station used for `issuer` (0: none yet).
    pub fn last_crl_number(&self, issuer: &str) -> Result<u64, StoreError> {
        let issuer = issuer.to_string();
        self.read(move |c| {
            let n: Option<i64> = c.query_row("SELECT last_number FROM crl_numbers WHERE issuer = ?1", [issuer], |r| r.get(0)).optional()?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
    }

    /// The next CRL number for `issuer`: one more than the last this
    /// station used, and at least `at_least` (a number the center gave);
    /// kept, atomically, in the writer's transaction.
    pub fn next_crl_number(&self, issuer: &str, at_least: u64) -> Result<u64, StoreError> {
        let issuer = issuer.to_string();
        let floor = i64::try_from(at_least).unwrap_or(i64::MAX);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let n: i64 = t.query_row(
                "INSERT INTO crl_numbers(issuer, last_number, updated_at) VALUES (?1, max(1, ?2), ?3)
                 ON CONFLICT (issuer) DO UPDATE SET last_number = max(last_number + 1, ?2), updated_at = ?3
                 RETURNING last_number",
                params![issuer, floor, now_text()],
                |r| r.get(0),
            )?;
            let _ = tx.send(n);
            Ok(())
        })?;
        let n = rx.recv().map_err(|_| StoreError::WriterGone)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Intent;
    use crate::types::Timestamp;

    fn issued(s: &Store, serial: &str, batch: &str, cert_serial: &str) -> String {
        if s.work_order(batch).unwrap().is_none() {
            let w = crate::NewWorkOrder {
                id: batch.into(),
                product: "p".into(),
                quantity: 100,
                valid_from: None,
                valid_until: None,
                stations: None,
            };
            s.add_work_order(&w, None).unwrap();
        }
        let a = s.begin_attempt("p", Some(batch)).unwrap();
        let id = crate::new_id();
        s.journal_intent(&Intent {
            id: id.clone(),
            attempt_id: a,
            device_serial: serial.into(),
            issuer: "CN=CA".into(),
            serial_hex: cert_serial.into(),
            spki_sha256: format!("k-{cert_serial}"),
            spki_der: vec![1],
            not_before: Timestamp::now(),
            not_after: Timestamp::now(),
        })
        .unwrap();
        s.mark_issued(&id, b"der", b"chain", "fp").unwrap();
        id
    }

    fn rev(reason: &str) -> Revocation {
        Revocation { reason: reason.into(), comment: Some("lost in transit".into()), operator: Some("sup-1".into()) }
    }

    #[test]
    fn a_revocation_records_reason_operator_outbox_and_an_anchoring_audit_entry_and_is_final() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        s.set_station_id("st-1");
        let c1 = issued(&s, "SN-1", "WO-1", "0a01");
        let _c2 = issued(&s, "SN-2", "WO-1", "0a02");
        let _c3 = issued(&s, "SN-3", "WO-2", "0a03");
        let out = s.revoke(&CertSelector::CertSerial("0A01".into()), &rev("key_compromise")).unwrap();
        assert_eq!(out.revoked.len(), 1);
        let r = &out.revoked[0];
        assert_eq!((r.id.as_str(), r.status.as_str()), (c1.as_str(), "revoked"));
        assert_eq!((r.revocation_reason.as_deref(), r.revoked_by.as_deref()), (Some("key_compromise"), Some("sup-1")));
        assert!(r.revoked_at.is_some());
        // Audit: one entry anchoring the revoked row, and the trail verifies.
        let trail = s.audit_entries(&Default::default()).unwrap();
        let e = trail.iter().find(|e| e.kind.as_str() == "revocation").unwrap();
        assert_eq!(e.subject.as_deref(), Some(c1.as_str()));
        assert_eq!(e.anchor_list().unwrap()[0].key, c1);
        assert!(s.verify_audit(None).unwrap().ok());
        // Batch: the one left in WO-1 is revoked now, the first stays as it was.
        let out = s.revoke(&CertSelector::Batch("WO-1".into()), &rev("superseded")).unwrap();
        assert_eq!((out.revoked.len(), out.already.len()), (1, 1));
        assert_eq!(s.cert_by_id(&c1).unwrap().unwrap().revocation_reason.as_deref(), Some("key_compromise"));
        // Final: nothing sets it back.
        let e = s
            .write(move |t| {
                t.execute("UPDATE certificates SET status = 'issued' WHERE id = ?1", [&c1])?;
                Ok(())
            })
            .unwrap_err();
        assert!(e.to_string().contains("a revoked certificate never changes"), "{e}");
        let listed = s.revoked_certificates("CN=CA").unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|r| r.pending_sync));
        // CRL numbers: monotonic, and never below a number the center gave.
        assert_eq!(s.next_crl_number("CN=CA", 0).unwrap(), 1);
        assert_eq!(s.next_crl_number("CN=CA", 0).unwrap(), 2);
        assert_eq!(s.next_crl_number("CN=CA", 10).unwrap(), 10);
        assert_eq!(s.next_crl_number("CN=CA", 3).unwrap(), 11);
        assert_eq!(s.next_crl_number("CN=Other", 0).unwrap(), 1);
    }
}
