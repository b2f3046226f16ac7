//! The audit trail (docs/audit.md): list entries, append one, verify the
//! local hash chain and anchored records, verify against the center's copy
//! and head, and compare every local record with the center's copy.
//!
//! A verification returns its report; [`AuditReport::tampered`] and
//! [`SyncVerifyReport::tampered`] turn a failed one into the coded error
//! ([`ErrorCode::Tampered`], exit status 8) naming the first bad entry.

use crate::{Actor, ApiError, ApiResult, ErrorCode, Permission};
use imprint_proto::Closed;
use imprint_store::audit::{AuditEntry, AuditFilter, Finding, NewEntry, Verification};
use imprint_store::{RecordKey, Store};
use imprint_sync::verify::{CentralVerification, SyncVerification};
use imprint_sync::CentralConfig;
use serde::Serialize;

pub use imprint_store::AuditKind;

/// Which entries [`list`] returns. Times: a date (2026-11-01) or RFC 3339.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Operator id.
    pub operator: Option<String>,
    /// An [`AuditKind`] text (`sign_in`, `provisioning_outcome`, ...).
    pub kind: Option<String>,
    /// At or after.
    pub since: Option<String>,
    /// Before.
    pub until: Option<String>,
    pub limit: Option<usize>,
}

/// One entry as shown.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntryView {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub station_id: String,
    pub operator: Option<String>,
    /// The kind's text; `known_kind` is false for text this build does not know.
    pub kind: String,
    pub known_kind: bool,
    pub subject: Option<String>,
    /// The detail object (the stored text if it is not JSON).
    pub detail: serde_json::Value,
    pub anchors: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        let json = |t: &str| serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.to_string()));
        AuditEntryView {
            seq: e.seq,
            known_kind: e.kind.known().is_some(),
            kind: e.kind.as_str().to_string(),
            detail: json(&e.detail),
            anchors: json(&e.anchors),
            id: e.id,
            at: e.at,
            station_id: e.station_id,
            operator: e.operator,
            subject: e.subject,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

fn kinds() -> String {
    AuditKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// The kind named by `text`, or a bad request listing the kinds.
pub fn parse_kind(text: &str) -> ApiResult<AuditKind> {
    <AuditKind as Closed>::parse(text).ok_or_else(|| ApiError::bad_request(format!("unknown audit kind {text:?}; kinds: {}", kinds())))
}

/// Entries matching the query, oldest first.
pub fn list(actor: &Actor, store: &Store, q: &AuditQuery) -> ApiResult<Vec<AuditEntryView>> {
    actor.require(Permission::Audit)?;
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let f = AuditFilter {
        operator: q.operator.clone(),
        kind: kind.map(|k| k.as_str().to_string()),
        since: q.since.as_deref().map(crate::records::normalize_since).transpose()?,
        until: q.until.as_deref().map(crate::records::normalize_since).transpose()?,
        limit: q.limit,
    };
    Ok(store.audit_entries(&f)?.into_iter().map(AuditEntryView::from).collect())
}

/// Append an entry (the operations that record security events call this;
/// provisioning outcomes are appended by the store with the attempt's
/// finish). `anchor`: records whose current content the entry pins. A
/// detail key that names a secret is refused (`bad_request`).
pub fn append(
    store: &Store,
    operator: Option<&str>,
    kind: AuditKind,
    subject: Option<&str>,
    detail: serde_json::Value,
    anchor: Vec<RecordKey>,
) -> ApiResult<AuditEntryView> {
    let e = NewEntry { operator: operator.map(str::to_string), kind, subject: subject.map(str::to_string), detail, anchor };
    Ok(store.append_audit(e)?.into())
}

/// A finding with its sentence.
#[derive(Clone, Debug, Serialize)]
pub struct FindingView {
    pub message: String,
    #[serde(flatten)]
    pub finding: Finding,
}

impl From<Finding> for FindingView {
    fn from(f: Finding) -> Self {
        FindingView { message: f.message(), finding: f }
    }
}

/// What `imprint audit verify` reports.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    pub ok: bool,
    /// `local` or `central`.
    pub scope: &'static str,
    pub entries: usize,
    pub head_seq: Option<i64>,
    pub anchors_checked: usize,
    /// The first bad entry, named.
    pub first: Option<FindingView>,
    pub findings: Vec<FindingView>,
    /// With the center: its copy's length and head.
    pub central_entries: Option<usize>,
    pub central_head_seq: Option<i64>,
    /// With the center: the first problem of the center's own copy.
    pub central_chain: Option<FindingView>,
}

impl AuditReport {
    fn of(v: Verification, scope: &'static str) -> AuditReport {
        AuditReport {
            ok: v.ok(),
            scope,
            entries: v.entries,
            head_seq: v.head.as_ref().map(|h| h.seq),
            anchors_checked: v.anchors_checked,
            first: v.first.map(FindingView::from),
            findings: v.findings.into_iter().map(FindingView::from).collect(),
            central_entries: None,
            central_head_seq: None,
            central_chain: None,
        }
    }

    /// The coded error when tampering was found (naming the first bad entry).
    pub fn tampered(&self) -> Option<ApiError> {
        if let Some(f) = &self.first {
            let more = self.findings.len().saturating_sub(1);
            let tail = if more > 0 { format!(" (and {more} more finding(s))") } else { String::new() };
            return Some(ApiError::new(ErrorCode::Tampered, format!("audit trail: {}{tail}", f.message)));
        }
        self.central_chain
            .as_ref()
            .map(|f| ApiError::new(ErrorCode::Tampered, format!("the center's copy of the audit trail: {}", f.message)))
    }
}

/// Verify the local trail: the hash chain and every record against its latest anchor.
pub fn verify_local(actor: &Actor, store: &Store) -> ApiResult<AuditReport> {
    actor.require(Permission::Audit)?;
    Ok(AuditReport::of(store.verify_audit(None)?, "local"))
}

fn central_of(central: Option<&CentralConfig>) -> ApiResult<&CentralConfig> {
    central.ok_or_else(|| ApiError::bad_request("no [central] section in the configuration: nothing to compare with"))
}

/// Verify the local trail and compare it with the center's copy and the
/// head the center keeps (truncation, a rewrite after the last sync).
pub fn verify_central(actor: &Actor, store: &Store, station_id: &str, central: Option<&CentralConfig>) -> ApiResult<AuditReport> {
    actor.require(Permission::Audit)?;
    let CentralVerification { verification, central_entries, central_head, central_chain, .. } =
        imprint_sync::verify::verify_central(store, station_id, central_of(central)?)?;
    let mut r = AuditReport::of(verification, "central");
    r.central_entries = Some(central_entries);
    r.central_head_seq = central_head.map(|h| h.seq);
    r.central_chain = central_chain.map(FindingView::from);
    r.ok = r.ok && r.central_chain.is_none();
    Ok(r)
}

/// What `imprint sync verify` reports.
#[derive(Clone, Debug, Serialize)]
pub struct SyncVerifyReport {
    pub ok: bool,
    #[serde(flatten)]
    pub verification: SyncVerification,
}

impl SyncVerifyReport {
    /// The coded error when a difference nothing explains was found.
    pub fn tampered(&self) -> Option<ApiError> {
        let bad: Vec<_> = self.verification.unexplained().collect();
        let first = bad.first()?;
        let cols = if first.columns.is_empty() { String::new() } else { format!(" ({})", first.columns.join(", ")) };
        Some(ApiError::new(
            ErrorCode::Tampered,
            format!(
                "{} record(s) differ from the center's copies; first: {} {}{cols}",
                bad.len(),
                first.record,
                first.problem.replace('_', " ")
            ),
        ))
    }
}

/// Compare every local record with the center's copy.
pub fn sync_verify(actor: &Actor, store: &Store, station_id: &str, central: Option<&CentralConfig>) -> ApiResult<SyncVerifyReport> {
    actor.require(Permission::Audit)?;
    let v = imprint_sync::verify::sync_verify(store, station_id, central_of(central)?)?;
    let ok = v.unexplained().next().is_none();
    Ok(SyncVerifyReport { ok, verification: v })
}

/// Record a security event (sign-in, settings, operators, CA, exports) in
/// the trail. Best effort: the operation it records has happened, so a
/// failure to append (a read-only store beside a running station, a full
/// disk) is logged as an error, never returned; the running station's own
/// trail records what happens in it.
pub(crate) fn record(store: &Store, operator: Option<&str>, kind: AuditKind, subject: Option<&str>, detail: serde_json::Value) {
    if store.is_read_only() {
        tracing::warn!(kind = kind.as_str(), "audit entry not recorded: the store is read-only here (a station runs on this data dir)");
        return;
    }
    let e = NewEntry { operator: operator.map(str::to_string), kind, subject: subject.map(str::to_string), detail, anchor: Vec::new() };
    if let Err(err) = store.append_audit(e) {
        tracing::error!(kind = kind.as_str(), error = %err, "could not append to the audit trail");
    }
}
