//! Certificate lifecycle for supervisors: revocation and CRLs
//! ([docs/lifecycle.md](../../../docs/lifecycle.md#revocation)).
//!
//! - [`revoke`]: by device serial, certificate serial, work order / batch or
//!   issue time range, with an RFC 5280 reason and a comment; recorded
//!   (status `revoked`, time, reason, comment, operator), audited (a
//!   `revocation` entry anchoring the changed row) and synced, all in one
//!   store transaction. Final: a revoked certificate never changes again.
//! - [`generate_crl`]: a CRL signed by the CA signer (PKCS#11, KMS or the
//!   development key), built by rcgen; numbered from a counter in the store
//!   or, with `central`, from the center's counter for the CA, and covering
//!   what the station knows or (central) every station's revocations of the CA.
//!
//! Both need [`Permission::Revoke`] (supervisor, admin).

use crate::{Actor, ApiError, ApiResult, ErrorCode, Permission};
use imprint_core::crl::{build_crl, CrlEntry, CrlError, CrlPlan};
use imprint_core::signer::Signer;
use imprint_proto::Closed;
use imprint_station::StationConfig;
use imprint_store::{CertRow, CertSelector, Revocation, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use ts_rs::TS;

pub use imprint_core::crl::RevocationReason;

/// The longest comment kept with a revocation (characters).
pub const MAX_COMMENT: usize = 500;

/// Which certificates to revoke.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, TS)]
#[serde(tag = "by", rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum RevokeSelector {
    /// Every certificate issued to this device serial.
    DeviceSerial { serial: String },
    /// One certificate, by its serial (hex; `0x` and colons allowed).
    CertSerial { serial: String },
    /// Every certificate issued by attempts of this work order / batch.
    Batch { batch: String },
    /// Every certificate issued in `[since, until)` (dates or RFC 3339 times; either may be open).
    IssuedBetween { since: Option<String>, until: Option<String> },
}

impl RevokeSelector {
    fn to_store(&self) -> ApiResult<CertSelector> {
        let word = |what: &str, v: &str| -> ApiResult<String> {
            let v = v.trim();
            if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!("{what}: 1 to 128 printable characters")));
            }
            Ok(v.to_string())
        };
        Ok(match self {
            RevokeSelector::DeviceSerial { serial } => CertSelector::DeviceSerial(word("device serial", serial)?),
            RevokeSelector::CertSerial { serial } => {
                let s = word("certificate serial", serial)?;
                let hex = s.trim_start_matches("0x").replace(':', "");
                if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ApiError::bad_request(format!("certificate serial {s:?} is not hex")));
                }
                CertSelector::CertSerial(hex)
            }
            RevokeSelector::Batch { batch } => CertSelector::Batch(word("work order", batch)?),
            RevokeSelector::IssuedBetween { since, until } => {
                if since.is_none() && until.is_none() {
                    return Err(ApiError::bad_request(
                        "an issue time range needs --issued-since and/or --issued-until: every certificate at once is not a selector",
                    ));
                }
                let since = since.as_deref().map(crate::records::normalize_since).transpose()?;
                let until = until.as_deref().map(crate::records::normalize_since).transpose()?;
                if let (Some(s), Some(u)) = (&since, &until) {
                    if s >= u {
                        return Err(ApiError::bad_request(format!("the range is empty: {s} is not before {u}")));
                    }
                }
                CertSelector::IssuedBetween { since, until }
            }
        })
    }
}

/// The reason an operator typed (stored text, RFC name or kebab-case).
pub fn parse_reason(text: &str) -> ApiResult<RevocationReason> {
    RevocationReason::from_input(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// One certificate as a revocation reports it.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "RevokedCertDto")]
pub struct RevokedCertView {
    pub id: String,
    pub serial_hex: String,
    pub device_serial: String,
    pub issuer: String,
    pub status: String,
    pub revoked_at: Option<String>,
    pub reason: Option<String>,
    pub comment: Option<String>,
    pub revoked_by: Option<String>,
}

impl From<&CertRow> for RevokedCertView {
    fn from(c: &CertRow) -> Self {
        RevokedCertView {
            id: c.id.clone(),
            serial_hex: c.serial_hex.clone(),
            device_serial: c.device_serial.clone(),
            issuer: c.issuer.clone(),
            status: c.status.as_str().to_string(),
            revoked_at: c.revoked_at.as_ref().map(|t| t.to_string()),
            reason: c.revocation_reason.clone(),
            comment: c.revocation_comment.clone(),
            revoked_by: c.revoked_by.clone(),
        }
    }
}

/// What [`revoke`] did.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "RevokeReportDto")]
pub struct RevokeReport {
    /// The selector in words.
    pub selected: String,
    pub reason: String,
    /// Revoked now.
    pub revoked: Vec<RevokedCertView>,
    /// Revoked before (left as they were: a revocation is final).
    pub already_revoked: Vec<RevokedCertView>,
    /// Serials journaled but never issued: nothing to revoke.
    pub not_issued: Vec<String>,
    /// The revocations wait in the outbox until the center is reachable
    /// (always true right after a revocation; says that a CRL from the
    /// center will not show them before they are synced).
    pub pending_sync: bool,
}

pub(crate) fn check_comment(comment: Option<&str>) -> ApiResult<Option<String>> {
    let Some(c) = comment.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if c.chars().count() > MAX_COMMENT {
        return Err(ApiError::bad_request(format!("a revocation comment has at most {MAX_COMMENT} characters")));
    }
    if c.chars().any(|ch| ch.is_control() && ch != '\n') {
        return Err(ApiError::bad_request("a revocation comment has no control characters"));
    }
    Ok(Some(c.to_string()))
}

/// Revoke the certificates `selector` names, with `reason` and an optional
/// comment, as `actor` (needs [`Permission::Revoke`]). Nothing matched is
/// `not_found`; certificates revoked before are reported and left as they are.
pub fn revoke(
    actor: &Actor,
    store: &Store,
    selector: &RevokeSelector,
    reason: RevocationReason,
    comment: Option<&str>,
) -> ApiResult<RevokeReport> {
    actor.require(Permission::Revoke)?;
    let sel = selector.to_store()?;
    let comment = check_comment(comment)?;
    if store.is_read_only() {
        return Err(ApiError::new(
            ErrorCode::StoreLocked,
            "a station is running on this data dir and owns its store: revoke from that station's app, or stop it and run `imprint revoke` again",
        ));
    }
    let r = Revocation { reason: reason.as_str().to_string(), comment, operator: Some(actor.id().to_string()) };
    let out = store.revoke(&sel, &r)?;
    if out.revoked.is_empty() && out.already.is_empty() && out.not_issued.is_empty() {
        return Err(ApiError::not_found(format!("no certificate matches {}", sel.describe())));
    }
    for c in &out.revoked {
        tracing::info!(serial = %c.serial_hex, device = %c.device_serial, reason = reason.as_str(), operator = actor.id(), "certificate revoked");
    }
    Ok(RevokeReport {
        selected: sel.describe(),
        reason: reason.as_str().to_string(),
        pending_sync: !out.revoked.is_empty(),
        revoked: out.revoked.iter().map(RevokedCertView::from).collect(),
        already_revoked: out.already.iter().map(RevokedCertView::from).collect(),
        not_issued: out.not_issued.iter().map(|c| c.serial_hex.clone()).collect(),
    })
}

/// What [`generate_crl`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct CrlReport {
    pub path: PathBuf,
    /// `station`: what this station knows; `central`: every station's
    /// revocations of the CA at the center, plus this station's not yet synced.
    pub scope: &'static str,
    pub issuer: String,
    pub number: u64,
    pub this_update: String,
    pub next_update: String,
    /// Revoked certificates listed.
    pub entries: usize,
    /// Of those, revoked here and not at the center yet.
    pub not_yet_synced: usize,
    /// Of those (central), revoked at other stations.
    pub from_other_stations: usize,
    /// What the CRL covers, in a sentence for the operator.
    pub coverage: String,
}

/// The issuing CA's certificate (DER) and an open signer whose key is the CA's.
fn open_ca(cfg: &StationConfig, pin: Option<imprint_signer::Pin>) -> ApiResult<(Vec<u8>, Box<dyn Signer>)> {
    let chain_path = cfg.ca_chain_path();
    let text = std::fs::read_to_string(&chain_path).map_err(|e| {
        ApiError::new(ErrorCode::Ca, format!("no CA certificate at {} ({e}): create one with `imprint ca init`", chain_path.display()))
    })?;
    let chain = imprint_core::ca::load_chain_pem(&text)?;
    let issuing = chain.first().ok_or_else(|| ApiError::new(ErrorCode::Ca, "the CA chain file is empty"))?.clone();
    let signer = imprint_signer::open_signer(&cfg.signer_uri(), pin)?;
    imprint_core::ca::check_ca_matches_signer(&issuing, signer.as_ref())?;
    Ok((issuing, signer))
}

fn entry_of(serial_hex: &str, revoked_at: time::OffsetDateTime, reason: Option<&str>) -> CrlEntry {
    // A reason this build does not know (a newer station's) is listed as unspecified.
    let reason = reason.and_then(<RevocationReason as Closed>::parse).unwrap_or(RevocationReason::Unspecified);
    CrlEntry { serial_hex: serial_hex.to_string(), revoked_at, reason }
}

/// Write `data` to `path` whole or not at all (a temp file renamed over it),
/// readable by the broker that loads it: a CRL is public (0644).
fn write_public_atomically(path: &Path, data: &[u8]) -> ApiResult<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| ApiError::bad_request(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ApiError::io(path.display(), e)
    })
}

/// Generate a CRL for the station's CA, signed by its signer, and write it
/// to `out` as PEM. Without `central`: this station's revocations, numbered
/// from the store's counter. With `central`: the center's counter for the
/// CA and every station's revocations there, plus this station's not yet
/// synced. `store` is the station's (read-only beside a running station:
/// then only `central` works, since a local number cannot be kept).
pub fn generate_crl(
    actor: &Actor,
    cfg: &StationConfig,
    store: &Store,
    pin: Option<imprint_signer::Pin>,
    out: &Path,
    central: bool,
) -> ApiResult<CrlReport> {
    actor.require(Permission::Revoke)?;
    let (issuing, mut signer) = open_ca(cfg, pin)?;
    let issuer =
        imprint_core::issuance::summarize(&issuing).map_err(|e| ApiError::new(ErrorCode::Ca, format!("CA certificate: {e}")))?.subject;
    let local = store.revoked_certificates(&issuer)?;
    let mut entries: BTreeMap<String, CrlEntry> = BTreeMap::new();
    let not_yet_synced = local.iter().filter(|r| r.pending_sync).count();
    for r in &local {
        let at = r.cert.revoked_at.as_ref().and_then(|t| t.get()).map(|t| t.get()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        entries.insert(r.cert.serial_hex.clone(), entry_of(&r.cert.serial_hex, at, r.cert.revocation_reason.as_deref()));
    }
    let last_local = store.last_crl_number(&issuer)?;
    let (number, scope, from_other_stations) = if central {
        let cc = cfg
            .central
            .as_ref()
            .ok_or_else(|| ApiError::bad_request("no [central] section in the configuration: `crl generate --central` needs the center"))?;
        let got = imprint_sync::crl::central_crl(cc, &cfg.station_id, &issuer, last_local + 1)?;
        let mut others = 0;
        for r in &got.revocations {
            if r.station_id != cfg.station_id {
                others += 1;
            }
            entries.entry(r.serial_hex.clone()).or_insert_with(|| entry_of(&r.serial_hex, r.revoked_at, r.reason.as_deref()));
        }
        if !store.is_read_only() {
            // Local numbering continues above the center's (never backwards).
            store.next_crl_number(&issuer, got.number)?;
        }
        (got.number, "central", others)
    } else {
        if store.is_read_only() {
            return Err(ApiError::new(
                ErrorCode::StoreLocked,
                "a station is running on this data dir and owns its store, where the CRL number is kept: use --central, or stop the station",
            ));
        }
        (store.next_crl_number(&issuer, 0)?, "station", 0)
    };
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let next = now + time::Duration::hours(i64::from(cfg.crl.next_update_hours));
    let plan = CrlPlan { number, this_update: now, next_update: next, entries: entries.into_values().collect() };
    let der = build_crl(&plan, &issuing, signer.as_mut()).map_err(|e| match e {
        CrlError::Signer(s) => ApiError::from(s),
        CrlError::Build(m) => ApiError::new(ErrorCode::Ca, m),
    })?;
    let pem = pem::encode(&pem::Pem::new("X509 CRL", der));
    write_public_atomically(out, pem.as_bytes())?;
    let n = plan.entries.len();
    let coverage = if central {
        format!(
            "every station's revocations of this CA that reached the center ({from_other_stations} from other stations){}",
            if not_yet_synced > 0 { format!(", and {not_yet_synced} of this station's not synced yet") } else { String::new() }
        )
    } else {
        format!(
            "only what this station knows: its own {n} revocation(s){}; revocations made at other stations are NOT included (use --central for the CA's complete CRL)",
            if not_yet_synced > 0 && cfg.central.is_some() { format!(", {not_yet_synced} not at the center yet") } else { String::new() }
        )
    };
    tracing::info!(number, entries = n, scope, path = %out.display(), "CRL generated");
    Ok(CrlReport {
        path: out.to_path_buf(),
        scope,
        issuer,
        number,
        this_update: imprint_store::ts(plan.this_update),
        next_update: imprint_store::ts(plan.next_update),
        entries: n,
        not_yet_synced,
        from_other_stations,
        coverage,
    })
}
