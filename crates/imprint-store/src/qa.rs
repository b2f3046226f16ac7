//! QA verdicts (docs/lifecycle.md, "QA verification"): one record per
//! verification, written once with its outbox row and its `qa_verdict`
//! audit entry (anchoring the verdict) in the same transaction; SQLite
//! triggers refuse changing or deleting one.

use crate::audit::{append_in, NewEntry};
use crate::outbox::{enqueue, Entity, RecordKey};
use crate::synced::{synced_row, SyncedRow};
use crate::{now_text, AuditKind, Store, StoreError};
use rusqlite::params;
use serde::Serialize;

/// A verdict to record.
#[derive(Clone, Debug)]
pub struct NewQaVerdict {
    pub operator: Option<String>,
    pub port: String,
    pub device_serial: String,
    /// The certificate read from the device (lowercase hex serial), if any.
    pub cert_serial_hex: Option<String>,
    /// The store's record of that certificate, if it has one.
    pub certificate_id: Option<String>,
    /// The work order / batch of the attempt that issued it.
    pub batch: Option<String>,
    pub passed: bool,
    /// JSON array of `{"check", "result", "detail"}`.
    pub checks_json: String,
    /// The names of the checks that failed (for the audit entry).
    pub failed: Vec<String>,
}

synced_row! {
    /// A recorded verdict.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct QaVerdictRow: QA_VERDICTS {
        pub id: String,
        pub at: String,
        pub operator: Option<String>,
        pub port: String,
        pub device_serial: String,
        pub cert_serial_hex: Option<String>,
        pub certificate_id: Option<String>,
        pub batch: Option<String>,
        /// `pass` or `fail`.
        pub verdict: String,
        /// JSON array of `{"check", "result", "detail"}`.
        pub checks: String,
    }
}

/// Which verdicts [`Store::qa_verdicts`] returns (newest first).
#[derive(Clone, Debug, Default)]
pub struct QaFilter {
    pub device_serial: Option<String>,
    pub batch: Option<String>,
    pub limit: Option<usize>,
}

/// Per work order / batch: devices provisioned (distinct serials with a
/// passed attempt) and devices verified by QA (distinct serials with a verdict).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchQaCounts {
    /// None: attempts without a work order.
    pub batch: Option<String>,
    pub provisioned: u64,
    pub verified: u64,
}

impl Store {
    /// Record a verdict and its `qa_verdict` audit entry (anchoring the
    /// verdict and, when the store knows it, the certificate) in one
    /// transaction.
    pub fn record_qa_verdict(&self, v: NewQaVerdict) -> Result<QaVerdictRow, StoreError> {
        let station = self.station_id();
        let rec = QaVerdictRow {
            id: crate::new_id(),
            at: now_text(),
            operator: v.operator.clone(),
            port: v.port.clone(),
            device_serial: v.device_serial.clone(),
            cert_serial_hex: v.cert_serial_hex.clone(),
            certificate_id: v.certificate_id.clone(),
            batch: v.batch.clone(),
            verdict: if v.passed { "pass" } else { "fail" }.to_string(),
            checks: v.checks_json.clone(),
        };
        let r = rec.clone();
        self.write(move |t| {
            r.insert_in(t)?;
            enqueue(t, Entity::QaVerdict, &r.id, 0)?;
            let mut anchor = vec![RecordKey { entity: Entity::QaVerdict, id: r.id.clone(), step_no: 0 }];
            if let Some(c) = &r.certificate_id {
                anchor.push(RecordKey { entity: Entity::Certificate, id: c.clone(), step_no: 0 });
            }
            let detail = serde_json::json!({
                "verdict": r.verdict,
                "device_serial": r.device_serial,
                "cert_serial": r.cert_serial_hex,
                "failed": v.failed,
                "port": r.port,
            });
            append_in(
                t,
                &station,
                &NewEntry { operator: r.operator.clone(), kind: AuditKind::QaVerdict, subject: Some(r.id.clone()), detail, anchor },
            )?;
            Ok(())
        })?;
        Ok(rec)
    }

    /// Verdicts matching `f`, newest first.
    pub fn qa_verdicts(&self, f: &QaFilter) -> Result<Vec<QaVerdictRow>, StoreError> {
        let f = f.clone();
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {} FROM qa_verdicts v WHERE (?1 IS NULL OR device_serial = ?1) AND (?2 IS NULL OR batch = ?2)
                 ORDER BY at DESC, id DESC LIMIT ?3",
                QaVerdictRow::select("v")
            ))?;
            let limit = f.limit.map_or(-1, |l| l as i64);
            let rows = s.query_map(params![f.device_serial, f.batch, limit], QaVerdictRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Provisioned and verified devices per work order / batch (`batch`:
    /// only that one), for the QA sampling plan.
    pub fn qa_batch_counts(&self, batch: Option<&str>) -> Result<Vec<BatchQaCounts>, StoreError> {
        let batch = batch.map(str::to_string);
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "WITH p AS (SELECT batch, count(DISTINCT device_serial) AS n FROM attempts
                            WHERE status = 'passed' AND device_serial IS NOT NULL GROUP BY batch),
                      v AS (SELECT batch, count(DISTINCT device_serial) AS n FROM qa_verdicts GROUP BY batch),
                      b AS (SELECT batch FROM p UNION SELECT batch FROM v)
                 SELECT b.batch, coalesce(p.n, 0), coalesce(v.n, 0) FROM b
                   LEFT JOIN p ON p.batch IS b.batch LEFT JOIN v ON v.batch IS b.batch
                 WHERE ?1 IS NULL OR b.batch = ?1 ORDER BY b.batch",
            )?;
            let rows = s
                .query_map(params![batch], |r| {
                    Ok(BatchQaCounts { batch: r.get(0)?, provisioned: r.get::<_, i64>(1)? as u64, verified: r.get::<_, i64>(2)? as u64 })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn verdict(serial: &str, batch: Option<&str>, passed: bool) -> NewQaVerdict {
        NewQaVerdict {
            operator: Some("qa-1".into()),
            port: "/dev/pts/9".into(),
            device_serial: serial.into(),
            cert_serial_hex: Some("0a0b".into()),
            certificate_id: None,
            batch: batch.map(str::to_string),
            passed,
            checks_json: r#"[{"check":"lock","result":"fail","detail":"unlocked"}]"#.into(),
            failed: if passed { vec![] } else { vec!["lock".into()] },
        }
    }

    #[test]
    fn a_verdict_is_recorded_with_its_outbox_row_and_an_audit_entry_anchoring_it_and_never_changes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        s.set_station_id("st-1");
        let v = s.record_qa_verdict(verdict("SN-1", Some("WO-1"), false)).unwrap();
        assert_eq!(v.verdict, "fail");
        assert_eq!(
            s.qa_verdicts(&QaFilter { device_serial: Some("SN-1".into()), ..Default::default() }).unwrap(),
            std::slice::from_ref(&v)
        );
        let trail = s.audit_entries(&Default::default()).unwrap();
        let e = trail.iter().find(|e| e.subject.as_deref() == Some(v.id.as_str())).unwrap();
        assert_eq!(e.kind.as_str(), "qa_verdict");
        assert_eq!(e.operator.as_deref(), Some("qa-1"));
        let anchors = e.anchor_list().unwrap();
        assert_eq!((anchors[0].table.as_str(), anchors[0].key.as_str()), ("qa_verdict", v.id.as_str()));
        assert!(s.verify_audit(None).unwrap().ok());
        let queued: i64 = s
            .read(|c| Ok(c.query_row("SELECT count(*) FROM outbox WHERE entity = 'qa_verdict' AND entity_id = ?1", [&v.id], |r| r.get(0))?))
            .unwrap();
        assert_eq!(queued, 1);
        let id = v.id.clone();
        assert!(s.write(move |t| Ok(t.execute("UPDATE qa_verdicts SET verdict = 'pass' WHERE id = ?1", [&id]).map(|_| ())?)).is_err());
        let id = v.id.clone();
        assert!(s.write(move |t| Ok(t.execute("DELETE FROM qa_verdicts WHERE id = ?1", [&id]).map(|_| ())?)).is_err());
    }

    #[test]
    fn batch_counts_count_distinct_devices_provisioned_and_verified() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        s.write(|t| {
            for (i, (serial, batch)) in [("A", "WO-1"), ("B", "WO-1"), ("C", "WO-1"), ("A", "WO-1"), ("D", "WO-2")].iter().enumerate() {
                t.execute(
                    "INSERT INTO attempts(id, port, started_at, status, batch, device_serial) VALUES (?1, 'p', ?2, 'passed', ?3, ?4)",
                    params![format!("00000000-0000-7000-8000-00000000000{i}"), now_text(), batch, serial],
                )?;
            }
            Ok(())
        })
        .unwrap();
        s.record_qa_verdict(verdict("A", Some("WO-1"), true)).unwrap();
        s.record_qa_verdict(verdict("A", Some("WO-1"), false)).unwrap();
        let all = s.qa_batch_counts(None).unwrap();
        assert_eq!(
            all,
            [
                BatchQaCounts { batch: Some("WO-1".into()), provisioned: 3, verified: 1 },
                BatchQaCounts { batch: Some("WO-2".into()), provisioned: 1, verified: 0 }
            ]
        );
        assert_eq!(s.qa_batch_counts(Some("WO-2")).unwrap().len(), 1);
    }
}
