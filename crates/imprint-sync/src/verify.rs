//! Checking a station against the center: its audit trail against the copy
//! and chain head the center keeps (`imprint audit verify --central`), and
//! every local record against the center's copy (`imprint sync verify`).
//! Both connect as the station's own role: row-level security shows it its
//! own rows only.

use crate::config::CentralConfig;
use crate::record::{central_select, central_values};
use crate::SyncError;
use imprint_store::audit::{verify, AuditEntry, CurrentHashes, Finding, Head, Verification};
use imprint_store::synced::{Kind, SyncedRow, Table, Value, AUDIT, TABLES};
use imprint_store::{hash, Entity, RecordKey, Store};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use std::collections::{BTreeMap, HashMap};

fn runtime() -> Result<tokio::runtime::Runtime, SyncError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SyncError::Config(format!("cannot start the sync runtime: {e}")))
}

pub(crate) async fn connect(cfg: &CentralConfig, station: &str) -> Result<PgConnection, SyncError> {
    let opts = cfg.connect_options()?;
    let t = std::time::Duration::from_millis(cfg.timeout_ms.max(1000));
    let mut c = tokio::time::timeout(t, opts.connect())
        .await
        .map_err(|_| SyncError::Connect("timed out connecting".into()))?
        .map_err(SyncError::connect)?;
    crate::schema::check_station(&mut c, station).await?;
    Ok(c)
}

/// A station's trail as the center holds it, and the head it keeps.
#[derive(Clone, Debug, Default)]
pub struct CentralTrail {
    pub entries: Vec<AuditEntry>,
    pub head: Option<Head>,
}

/// An entry from the center's columns (descriptor order) and the station
/// that sent it (the local-only `station_id`), read through the descriptor.
fn entry_of(mut values: Vec<Value>, station: String) -> Result<AuditEntry, SyncError> {
    values.push(Value::Text(station));
    AuditEntry::from_values(&values).map_err(|e| SyncError::Db(sqlx::Error::Decode(Box::new(e))))
}

/// Read a station's trail and head at the center.
pub async fn central_trail(conn: &mut PgConnection, station: &str) -> Result<CentralTrail, SyncError> {
    let sql = format!("SELECT {}, c.station_id FROM {} c WHERE c.station_id = $1 ORDER BY c.seq", central_select(&AUDIT), AUDIT.central);
    let n = AUDIT.columns.len();
    let mut entries = Vec::new();
    for r in sqlx::query(AssertSqlSafe(sql)).bind(station).fetch_all(&mut *conn).await? {
        let (values, _, _) = central_values(&AUDIT, &r)?;
        entries.push(entry_of(values, r.try_get(n + 2)?)?);
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE station_id = $1")
        .bind(station)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| Ok::<_, sqlx::Error>(Head { seq: r.try_get(0)?, hash: r.try_get(1)? }))
        .transpose()?;
    Ok(CentralTrail { entries, head })
}

/// The local trail checked against the center's copy and head.
#[derive(Clone, Debug, Serialize)]
pub struct CentralVerification {
    pub station_id: String,
    /// The local findings plus what the comparison with the center found
    /// (truncated, diverged).
    pub verification: Verification,
    pub central_entries: usize,
    pub central_head: Option<Head>,
    /// The center's own copy verified as a chain: its first problem, if any.
    pub central_chain: Option<Finding>,
}

/// Compare a local trail with the center's (pure; see [`verify_central`]).
pub fn compare_with_center(local: &[AuditEntry], current: &CurrentHashes, central: &CentralTrail) -> Verification {
    let mut v = verify(local, current, central.head.as_ref());
    let by_seq: HashMap<i64, &AuditEntry> = central.entries.iter().map(|e| (e.seq, e)).collect();
    let diverged = local.iter().find_map(|e| {
        let c = by_seq.get(&e.seq)?;
        (c.hash != e.hash || c.id != e.id).then(|| Finding::Diverged {
            seq: e.seq,
            id: e.id.clone(),
            local_hash: e.hash.clone(),
            central_hash: c.hash.clone(),
        })
    });
    v.add(diverged);
    v
}

/// `imprint audit verify --central`: the local trail, verified, then compared
/// entry by entry with the center's copy and against the head the center
/// keeps (a trail truncated or rewritten after its last sync is caught).
pub fn verify_central(store: &Store, station: &str, cfg: &CentralConfig) -> Result<CentralVerification, SyncError> {
    let (entries, current) = store.audit_snapshot()?;
    let central = runtime()?.block_on(async {
        let mut c = connect(cfg, station).await?;
        let t = central_trail(&mut c, station).await;
        let _ = c.close().await;
        t
    })?;
    let verification = compare_with_center(&entries, &current, &central);
    let central_chain = verify(&central.entries, &HashMap::new(), None).first;
    Ok(CentralVerification {
        station_id: station.to_string(),
        verification,
        central_entries: central.entries.len(),
        central_head: central.head,
        central_chain,
    })
}

/// How one record differs between the station and the center.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordDifference {
    pub record: RecordKey,
    /// `differs`, `missing_at_center` or `missing_locally`.
    pub problem: &'static str,
    /// The columns whose values differ (`differs`).
    pub columns: Vec<String>,
    pub local_sha256: Option<String>,
    pub central_sha256: Option<String>,
    /// Why the difference is expected: `pending` (a change not sent yet) or
    /// `quarantined` (set aside, reported by `imprint sync status`); None:
    /// nothing explains it (the local or central copy was edited).
    pub expected: Option<&'static str>,
}

/// `imprint sync verify`.
#[derive(Clone, Debug, Serialize)]
pub struct SyncVerification {
    pub station_id: String,
    /// Records compared (local and central, by key).
    pub compared: usize,
    pub differences: Vec<RecordDifference>,
}

impl SyncVerification {
    /// Differences nothing explains.
    pub fn unexplained(&self) -> impl Iterator<Item = &RecordDifference> {
        self.differences.iter().filter(|d| d.expected.is_none())
    }
}

/// A value as compared: times as the instant (µs), the rest as they are.
fn normal(kind: Kind, v: &Value) -> Value {
    match (kind, v) {
        (Kind::Time, Value::Text(s)) => match imprint_store::parse_ts(s) {
            Some(t) => Value::Int(t.unix_timestamp_nanos().div_euclid(1000) as i64),
            None => v.clone(),
        },
        (Kind::Uuid, Value::Text(s)) => Value::Text(s.to_ascii_lowercase()),
        (Kind::Bool, Value::Int(n)) => Value::Int(i64::from(*n != 0)),
        _ => v.clone(),
    }
}

fn differing_columns(table: &Table, a: &[Value], b: &[Value]) -> Vec<String> {
    table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| normal(c.kind, a.get(*i).unwrap_or(&Value::Null)) != normal(c.kind, b.get(*i).unwrap_or(&Value::Null)))
        .map(|(_, c)| c.name.to_string())
        .collect()
}

async fn central_records(conn: &mut PgConnection, table: &Table, station: &str) -> Result<BTreeMap<RecordKey, Vec<Value>>, SyncError> {
    let sql = format!("SELECT {} FROM {} c WHERE c.station_id = $1", central_select(table), table.central);
    let mut out = BTreeMap::new();
    for r in sqlx::query(AssertSqlSafe(sql)).bind(station).fetch_all(&mut *conn).await? {
        let (values, _, _) = central_values(table, &r)?;
        if let Some(k) = table.record_key(&values) {
            out.insert(k, values);
        }
    }
    Ok(out)
}

/// Compare local records with the center's copies (pure; see [`sync_verify`]).
pub fn compare_records(
    station: &str,
    table: &Table,
    local: Vec<(RecordKey, Vec<Value>)>,
    mut central: BTreeMap<RecordKey, Vec<Value>>,
    pending: &std::collections::HashSet<RecordKey>,
    quarantined: &std::collections::HashSet<RecordKey>,
) -> (usize, Vec<RecordDifference>) {
    let expected = |k: &RecordKey| {
        if quarantined.contains(k) {
            Some("quarantined")
        } else if pending.contains(k) {
            Some("pending")
        } else {
            None
        }
    };
    let mut n = 0;
    let mut out = Vec::new();
    for (k, lv) in local {
        n += 1;
        let lh = hex::encode(hash::record(table, station, &lv));
        match central.remove(&k) {
            None => out.push(RecordDifference {
                expected: expected(&k),
                record: k,
                problem: "missing_at_center",
                columns: Vec::new(),
                local_sha256: Some(lh),
                central_sha256: None,
            }),
            Some(cv) => {
                let ch = hex::encode(hash::record(table, station, &cv));
                if ch != lh {
                    out.push(RecordDifference {
                        expected: expected(&k),
                        record: k,
                        problem: "differs",
                        columns: differing_columns(table, &lv, &cv),
                        local_sha256: Some(lh),
                        central_sha256: Some(ch),
                    });
                }
            }
        }
    }
    for (k, cv) in central {
        n += 1;
        out.push(RecordDifference {
            expected: expected(&k),
            record: k,
            problem: "missing_locally",
            columns: Vec::new(),
            local_sha256: None,
            central_sha256: Some(hex::encode(hash::record(table, station, &cv))),
        });
    }
    (n, out)
}

/// `imprint sync verify`: every local record (attempts, steps, certificates,
/// audit entries) against the center's copy, by content; lists every
/// difference and says which a pending or quarantined change explains.
pub fn sync_verify(store: &Store, station: &str, cfg: &CentralConfig) -> Result<SyncVerification, SyncError> {
    let (pending, quarantined) = store.unsynced_keys()?;
    let mut locals = Vec::new();
    for t in TABLES {
        locals.push(store.synced_records(t)?);
    }
    let centrals = runtime()?.block_on(async {
        let mut c = connect(cfg, station).await?;
        let mut out = Vec::new();
        for t in TABLES {
            out.push(central_records(&mut c, t, station).await?);
        }
        let _ = c.close().await;
        Ok::<_, SyncError>(out)
    })?;
    let mut v = SyncVerification { station_id: station.to_string(), compared: 0, differences: Vec::new() };
    for ((t, local), central) in TABLES.iter().zip(locals).zip(centrals) {
        let (n, d) = compare_records(station, t, local, central, &pending, &quarantined);
        v.compared += n;
        v.differences.extend(d);
    }
    v.differences.sort_by(|a, b| {
        let order = |e: Entity| TABLES.iter().position(|t| t.entity == e).unwrap_or(0);
        (order(a.record.entity), &a.record).cmp(&(order(b.record.entity), &b.record))
    });
    Ok(v)
}
