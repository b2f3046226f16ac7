//! Rework and renewal (docs/lifecycle.md, "Rework" and "Renewal").
//!
//! - A **rework authorisation** is a supervisor's permission to re-provision
//!   one device serial: written once with its outbox row and a
//!   `rework_authorised` audit entry; single-use (`used_at` is set once, in
//!   the transaction that journals the new certificate) and expiring.
//! - [`Store::journal_reissue`] is the one transaction of a renewal or a
//!   rework: the old certificate(s) leave the *current* state (`superseded`,
//!   or `revoked` with reason superseded), each with its outbox row and an
//!   audit entry anchoring it, the authorisation (rework) is used, and the
//!   new certificate is journaled `signing`, all or nothing. A kill -9 before
//!   it leaves the old certificate current and the new one not journaled; a
//!   kill -9 after it leaves only the new one current (completed on restart
//!   or the next attach). Two current certificates for a key never exist
//!   (the partial unique index `certificates_one_current_per_key`), and for
//!   a serial the flow never makes a second one.

use crate::audit::{append_in, NewEntry};
use crate::outbox::{enqueue, Entity, RecordKey};
use crate::records::{CertRow, Intent};
use crate::synced::{synced_row, SyncedRow};
use crate::types::{AuditKind, CertStatus};
use crate::{now_text, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

synced_row! {
    /// A recorded rework authorisation.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct ReworkRow: REWORK_AUTHORISATIONS {
        pub id: String,
        pub device_serial: String,
        pub authorised_at: String,
        pub authorised_by: Option<String>,
        pub expires_at: String,
        pub comment: Option<String>,
        /// When a rework used it (None: not used yet).
        pub used_at: Option<String>,
        pub attempt_id: Option<String>,
        pub certificate_id: Option<String>,
    }
}

/// What replaces what in [`Store::journal_reissue`].
#[derive(Clone, Debug)]
pub enum Supersede {
    /// Renewal: a new certificate for the same key replaces `old_id`, which
    /// becomes `superseded`, or `revoked` (reason superseded) when `revoke`.
    Renewal { old_id: String, revoke: bool, operator: Option<String> },
    /// Rework: the authorisation `authorisation_id` is used, and every
    /// `issued` or `superseded` certificate of the serial is revoked with
    /// reason superseded.
    Rework { authorisation_id: String, operator: Option<String> },
}

/// What [`Store::journal_reissue`] replaced.
#[derive(Clone, Debug, Default)]
pub struct Reissued {
    /// The old certificates as they are now (superseded or revoked).
    pub replaced: Vec<CertRow>,
}

fn cert(t: &Transaction<'_>, id: &str) -> Result<CertRow, StoreError> {
    Ok(t.query_row(&format!("SELECT {} FROM certificates c WHERE id = ?1", CertRow::select("c")), [id], CertRow::read)?)
}

/// How one old certificate leaves the current state.
struct Replace<'a> {
    /// The certificate that replaces it.
    new_id: &'a str,
    /// Revoke it (reason superseded) instead of only marking it superseded.
    revoke: bool,
    operator: &'a Option<String>,
    /// In words, for the revocation comment and the audit entry.
    why: &'a str,
    /// Another record the audit entry anchors (the authorisation used).
    also: Option<RecordKey>,
}

/// Take `old` out of the current state: superseded, or revoked with reason
/// superseded; its outbox row and an audit entry anchoring it.
fn supersede_in(t: &Transaction<'_>, station: &str, old: &CertRow, r: Replace<'_>) -> Result<CertRow, StoreError> {
    let Replace { new_id, revoke, operator, why, also } = r;
    let at = now_text();
    let n = if revoke {
        let comment = format!("{why}: replaced by certificate {new_id}");
        t.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?2, revocation_reason = 'superseded', revocation_comment = ?3,
                 revoked_by = ?4, superseded_at = coalesce(superseded_at, ?2), superseded_by = coalesce(superseded_by, ?5)
             WHERE id = ?1 AND status IN ('issued', 'superseded')",
            params![old.id, at, comment, operator, new_id],
        )?
    } else {
        t.execute(
            "UPDATE certificates SET status = 'superseded', superseded_at = ?2, superseded_by = ?3 WHERE id = ?1 AND status = 'issued'",
            params![old.id, at, new_id],
        )?
    };
    if n != 1 {
        return Err(StoreError::Duplicate(format!("certificate {} changed meanwhile: it is no longer {}", old.serial_hex, old.status)));
    }
    enqueue(t, Entity::Certificate, &old.id, 0)?;
    let mut anchor = vec![RecordKey { entity: Entity::Certificate, id: old.id.clone(), step_no: 0 }];
    anchor.extend(also);
    let detail = serde_json::json!({
        "certificate_serial": old.serial_hex,
        "device_serial": old.device_serial,
        "issuer": old.issuer,
        "reason": if revoke { Some("superseded") } else { None },
        "comment": why,
        "superseded_by": new_id,
    });
    let kind = if revoke { AuditKind::Revocation } else { AuditKind::CertificateSuperseded };
    append_in(t, station, &NewEntry { operator: operator.clone(), kind, subject: Some(old.id.clone()), detail, anchor })?;
    cert(t, &old.id)
}

/// Insert the journaled intent (status `signing`) and link it to its attempt.
pub(crate) fn insert_intent(t: &Transaction<'_>, i: &Intent) -> Result<(), StoreError> {
    let r = t.execute(
        "INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der,
             not_before, not_after, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'signing', ?10)",
        params![
            i.id,
            i.attempt_id,
            i.device_serial,
            i.issuer,
            i.serial_hex,
            i.spki_sha256,
            i.spki_der,
            i.not_before,
            i.not_after,
            now_text()
        ],
    );
    match r {
        Ok(_) => {
            // The work order's quota: counted in this transaction, or the row is rolled back
            // (a renewal or a rework is a new certificate and counts like any other).
            crate::work_orders::consume_in(t, &i.attempt_id)?;
            enqueue(t, Entity::Certificate, &i.id, 0)?;
            if t.execute("UPDATE attempts SET certificate_id=?2 WHERE id=?1", params![i.attempt_id, i.id])? > 0 {
                enqueue(t, Entity::Attempt, &i.attempt_id, 0)?;
            }
            Ok(())
        }
        Err(e) if crate::records::is_unique_violation(&e) => {
            Err(StoreError::Duplicate(format!("a current certificate already exists for key {} or serial {}", i.spki_sha256, i.serial_hex)))
        }
        Err(e) => Err(e.into()),
    }
}

fn reissue_in(t: &Transaction<'_>, station: &str, intent: &Intent, how: &Supersede) -> Result<Reissued, StoreError> {
    let mut out = Reissued::default();
    match how {
        Supersede::Renewal { old_id, revoke, operator } => {
            let old = cert(t, old_id)?;
            if old.spki_sha256 != intent.spki_sha256 || old.device_serial != intent.device_serial {
                return Err(StoreError::NotFound(format!("certificate {} is not this device's for this key", old.serial_hex)));
            }
            let r = Replace { new_id: &intent.id, revoke: *revoke, operator, why: "renewed", also: None };
            out.replaced.push(supersede_in(t, station, &old, r)?);
        }
        Supersede::Rework { authorisation_id, operator } => {
            let n = t.execute(
                "UPDATE rework_authorisations SET used_at = ?2, attempt_id = ?3, certificate_id = ?4
                 WHERE id = ?1 AND device_serial = ?5 AND used_at IS NULL AND expires_at > ?2",
                params![authorisation_id, now_text(), intent.attempt_id, intent.id, intent.device_serial],
            )?;
            if n != 1 {
                return Err(StoreError::NotFound(format!(
                    "the rework authorisation for {} expired or was used meanwhile",
                    intent.device_serial
                )));
            }
            enqueue(t, Entity::ReworkAuthorisation, authorisation_id, 0)?;
            let auth = RecordKey { entity: Entity::ReworkAuthorisation, id: authorisation_id.clone(), step_no: 0 };
            let olds: Vec<CertRow> = {
                let mut s = t.prepare(&format!(
                    "SELECT {} FROM certificates c WHERE device_serial = ?1 AND status IN ('signing', 'issued', 'superseded')
                     ORDER BY created_at, id",
                    CertRow::select("c")
                ))?;
                let rows = s.query_map([&intent.device_serial], CertRow::read)?.collect::<Result<Vec<_>, _>>()?;
                rows
            };
            if let Some(s) = olds.iter().find(|c| c.status == CertStatus::Signing) {
                return Err(StoreError::Duplicate(format!(
                    "certificate {} of {} is journaled for signing and not issued yet: attach the board that holds its key to finish it, then rework",
                    s.serial_hex, s.device_serial
                )));
            }
            let why = format!("rework authorised ({authorisation_id})");
            let mut first = true;
            for old in &olds {
                // The authorisation is anchored by the first entry (its one change).
                let also = if first { Some(auth.clone()) } else { None };
                first = false;
                let r = Replace { new_id: &intent.id, revoke: true, operator, why: &why, also };
                out.replaced.push(supersede_in(t, station, old, r)?);
            }
            if olds.is_empty() {
                let detail = serde_json::json!({ "device_serial": intent.device_serial, "used_by_attempt": intent.attempt_id });
                append_in(
                    t,
                    station,
                    &NewEntry {
                        operator: operator.clone(),
                        kind: AuditKind::ReworkAuthorised,
                        subject: Some(authorisation_id.clone()),
                        detail,
                        anchor: vec![auth],
                    },
                )?;
            }
        }
    }
    insert_intent(t, intent)?;
    Ok(out)
}

impl Store {
    /// Record a supervisor's authorisation to re-provision `device_serial`,
    /// valid until `expires_at` (stored-time text), with its outbox row and
    /// a `rework_authorised` audit entry anchoring it, in one transaction.
    pub fn authorise_rework(
        &self,
        device_serial: &str,
        operator: Option<&str>,
        comment: Option<&str>,
        expires_at: &str,
    ) -> Result<ReworkRow, StoreError> {
        let station = self.station_id();
        let rec = ReworkRow {
            id: crate::new_id(),
            device_serial: device_serial.to_string(),
            authorised_at: now_text(),
            authorised_by: operator.map(str::to_string),
            expires_at: expires_at.to_string(),
            comment: comment.map(str::to_string),
            used_at: None,
            attempt_id: None,
            certificate_id: None,
        };
        let r = rec.clone();
        self.write(move |t| {
            r.insert_in(t)?;
            enqueue(t, Entity::ReworkAuthorisation, &r.id, 0)?;
            let detail = serde_json::json!({
                "device_serial": r.device_serial,
                "expires_at": r.expires_at,
                "comment": r.comment,
            });
            append_in(
                t,
                &station,
                &NewEntry {
                    operator: r.authorised_by.clone(),
                    kind: AuditKind::ReworkAuthorised,
                    subject: Some(r.id.clone()),
                    detail,
                    anchor: vec![RecordKey { entity: Entity::ReworkAuthorisation, id: r.id.clone(), step_no: 0 }],
                },
            )?;
            Ok(())
        })?;
        Ok(rec)
    }

    /// The newest authorisation for `device_serial` that is neither used nor
    /// expired at `now` (stored-time text).
    pub fn open_rework(&self, device_serial: &str, now: &str) -> Result<Option<ReworkRow>, StoreError> {
        let (s, n) = (device_serial.to_string(), now.to_string());
        self.read(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {} FROM rework_authorisations r WHERE device_serial = ?1 AND used_at IS NULL AND expires_at > ?2
                     ORDER BY authorised_at DESC, id DESC LIMIT 1",
                    ReworkRow::select("r")
                ),
                params![s, n],
                ReworkRow::read,
            )
            .optional()?)
        })
    }

    /// Authorisations, newest first (of one serial, or all).
    pub fn rework_authorisations(&self, device_serial: Option<&str>) -> Result<Vec<ReworkRow>, StoreError> {
        let s = device_serial.map(str::to_string);
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {} FROM rework_authorisations r WHERE ?1 IS NULL OR device_serial = ?1 ORDER BY authorised_at DESC, id DESC",
                ReworkRow::select("r")
            ))?;
            let rows = st.query_map([s], ReworkRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The one transaction of a renewal or a rework: the old certificate(s)
    /// superseded or revoked (each audited and queued for sync), the
    /// authorisation used (rework), and the new intent journaled `signing`.
    pub fn journal_reissue(&self, intent: &Intent, how: &Supersede) -> Result<Reissued, StoreError> {
        let (i, h) = (intent.clone(), how.clone());
        let station = self.station_id();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.write(move |t| {
            let out = reissue_in(t, &station, &i, &h)?;
            let _ = tx.send(out);
            Ok(())
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn intent(attempt: &str, key: &str, serial: &str, n: &str) -> Intent {
        Intent {
            id: crate::new_id(),
            attempt_id: attempt.into(),
            device_serial: serial.into(),
            issuer: "CN=Test CA".into(),
            serial_hex: n.into(),
            spki_sha256: key.into(),
            spki_der: vec![1, 2, 3],
            not_before: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            not_after: Timestamp::parse("2027-01-01T00:00:00Z").unwrap(),
        }
    }

    fn issued(s: &Store, key: &str, serial: &str, n: &str) -> Intent {
        let a = s.begin_attempt("/dev/x", None).unwrap();
        let i = intent(&a, key, serial, n);
        s.journal_intent(&i).unwrap();
        s.mark_issued(&i.id, &[0x30], &[0x30], "fp").unwrap();
        i
    }

    fn current(s: &Store, serial: &str) -> Vec<CertRow> {
        s.certs_by_device_serial(serial).unwrap().into_iter().filter(|c| c.status.known().is_some_and(CertStatus::is_current)).collect()
    }

    #[test]
    fn one_current_certificate_per_key_a_renewal_supersedes_and_a_second_current_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        let old = issued(&s, "k1", "SN1", "01");
        // A second current certificate for the key: refused by the index.
        let a = s.begin_attempt("/dev/x", None).unwrap();
        assert!(matches!(s.journal_intent(&intent(&a, "k1", "SN1", "02")), Err(StoreError::Duplicate(_))));
        // A renewal: the old one superseded in the same transaction.
        let new = intent(&a, "k1", "SN1", "03");
        let r = s.journal_reissue(&new, &Supersede::Renewal { old_id: old.id.clone(), revoke: false, operator: None }).unwrap();
        assert_eq!(r.replaced[0].status, CertStatus::Superseded);
        assert_eq!(r.replaced[0].superseded_by.as_deref(), Some(new.id.as_str()));
        assert_eq!(s.cert_by_spki("k1").unwrap().unwrap().id, new.id, "the current one is found for the key");
        assert_eq!(current(&s, "SN1").len(), 1);
        // Superseded is never current again (trigger), but may be revoked.
        let back = s.write({
            let id = old.id.clone();
            move |t| Ok(t.execute("UPDATE certificates SET status = 'issued' WHERE id = ?1", [&id]).map(|_| ())?)
        });
        assert!(back.is_err(), "a superseded certificate became current again");
        // The audit trail still verifies: the change was anchored.
        let report = s.verify_audit(None).unwrap();
        assert!(report.ok(), "{report:?}");
    }

    /// A store written at schema 8 (certificates with the old inline
    /// `UNIQUE spki_sha256`, attempts referring to them, outbox rows) is
    /// migrated to 9 with every row, reference and outbox seq kept, and then
    /// allows a superseded and a current certificate for one key.
    #[test]
    fn a_schema_8_store_keeps_its_certificates_references_and_outbox_through_the_rebuild() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("station.db");
        {
            let mut c = rusqlite::Connection::open(&p).unwrap();
            let tx = c.transaction().unwrap();
            for (v, sql) in crate::MIGRATIONS.iter().filter(|(v, _)| *v <= 8) {
                tx.execute_batch(sql).unwrap();
                tx.pragma_update(None, "user_version", v).unwrap();
            }
            tx.execute_batch(
                "INSERT INTO attempts(id, port, started_at, status) VALUES ('a1', '/dev/x', '2026-01-01T00:00:00.000Z', 'passed');
                 INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before,
                     not_after, status, cert_der, created_at, issued_at)
                 VALUES ('c1', 'a1', 'SN8', 'CN=CA', '01', 'k8', x'01', '2026-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z',
                     'issued', x'30', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
                 UPDATE attempts SET certificate_id = 'c1' WHERE id = 'a1';
                 INSERT INTO outbox(entity, entity_id, changed_at) VALUES ('certificate', 'c1', '2026-01-01T00:00:01.000Z');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = Store::open(&p).unwrap();
        let c1 = s.cert_by_id("c1").unwrap().unwrap();
        assert_eq!((c1.status.as_str(), c1.spki_sha256.as_str(), c1.superseded_at.clone()), ("issued", "k8", None));
        assert_eq!(s.attempt("a1").unwrap().unwrap().certificate_id.as_deref(), Some("c1"));
        // The writer's connection (the one migrated) has foreign keys on again.
        let (tx, rx) = std::sync::mpsc::channel();
        s.write(move |t| {
            let _ = tx.send(t.pragma_query_value(None, "foreign_keys", |r| r.get::<_, bool>(0))?);
            Ok(())
        })
        .unwrap();
        assert!(rx.recv().unwrap(), "foreign keys are on again after the migration");
        let queued: i64 = s.read(|c| Ok(c.query_row("SELECT count(*) FROM outbox WHERE entity_id = 'c1'", [], |r| r.get(0))?)).unwrap();
        assert_eq!(queued, 1);
        // A renewal of the migrated certificate: the old row superseded, a second (current) one for the same key.
        let a = s.begin_attempt("/dev/x", None).unwrap();
        let new = intent(&a, "k8", "SN8", "02");
        s.journal_reissue(&new, &Supersede::Renewal { old_id: "c1".into(), revoke: false, operator: None }).unwrap();
        assert_eq!(s.cert_by_id("c1").unwrap().unwrap().status.as_str(), "superseded");
    }

    #[test]
    fn a_rework_authorisation_is_used_once_and_revokes_the_old_certificate_in_the_journal_transaction() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        let old = issued(&s, "k1", "SN2", "01");
        let expired = s.authorise_rework("SN2", Some("sup"), None, "2000-01-01T00:00:00.000Z").unwrap();
        assert_eq!(s.open_rework("SN2", &now_text()).unwrap(), None, "an expired authorisation is not open");
        let a = s.begin_attempt("/dev/x", None).unwrap();
        let try_expired = Supersede::Rework { authorisation_id: expired.id.clone(), operator: None };
        assert!(s.journal_reissue(&intent(&a, "k2", "SN2", "02"), &try_expired).is_err());
        assert_eq!(current(&s, "SN2").len(), 1, "nothing changed: the transaction was all or nothing");

        let auth = s.authorise_rework("SN2", Some("sup"), Some("board swapped"), "2999-01-01T00:00:00.000Z").unwrap();
        assert_eq!(s.open_rework("SN2", &now_text()).unwrap().map(|r| r.id), Some(auth.id.clone()));
        let new = intent(&a, "k2", "SN2", "03");
        let how = Supersede::Rework { authorisation_id: auth.id.clone(), operator: Some("tech".into()) };
        let r = s.journal_reissue(&new, &how).unwrap();
        assert_eq!(r.replaced.len(), 1);
        let gone = &r.replaced[0];
        assert_eq!(
            (gone.id.as_str(), gone.status.as_str(), gone.revocation_reason.as_deref()),
            (old.id.as_str(), "revoked", Some("superseded"))
        );
        let cur = current(&s, "SN2");
        assert_eq!(cur.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [new.id.as_str()]);
        let used = &s.rework_authorisations(Some("SN2")).unwrap()[0];
        assert_eq!((used.used_at.is_some(), used.certificate_id.as_deref()), (true, Some(new.id.as_str())));
        assert_eq!(s.open_rework("SN2", &now_text()).unwrap(), None, "single use");
        // Used twice: refused.
        let again = intent(&a, "k3", "SN2", "04");
        assert!(s.journal_reissue(&again, &how).is_err());
        assert!(s
            .write({
                let id = auth.id.clone();
                move |t| Ok(t.execute("UPDATE rework_authorisations SET used_at = NULL WHERE id = ?1", [&id]).map(|_| ())?)
            })
            .is_err());
        let report = s.verify_audit(None).unwrap();
        assert!(report.ok(), "{report:?}");
    }
}
