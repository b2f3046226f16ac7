//! CA set-up: create the CA key (in the HSM / KMS) and a self-signed root or
//! an intermediate CSR, import the chain a root signed, show the chain.
//!
//! CA checks: a chain that is expired or not yet valid is refused with its
//! dates; an installed chain is never replaced without `force`, and with it
//! the old chain is kept beside the new one (`<chain>.<UTC time>.bak`, 0600).

use crate::{ApiError, ApiResult};
use imprint_core::ca::{self, CaSubject};
use imprint_core::signer::SigAlg;
use imprint_signer::{create_ca_key, open_signer, Pin};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `imprint ca init`.
#[derive(Clone, Debug)]
pub struct CaInit {
    pub signer: String,
    pub subject: CaSubject,
    pub alg: SigAlg,
    pub generate_key: bool,
    pub days: u32,
    /// Write an intermediate CSR here instead of a self-signed root.
    pub csr: Option<PathBuf>,
    /// Where the chain goes (the station's CA chain path by default).
    pub out: PathBuf,
    /// Replace a chain already installed at `out` (kept as a `.bak` file).
    pub force: bool,
}

/// What `ca init` made.
#[derive(Clone, Debug, Serialize)]
pub struct CaInitDone {
    /// The signer URI to put in the config (a new KMS key's URI, when one was created).
    pub signer_uri: String,
    pub key_generated: bool,
    /// Where the root (or the CSR) was written.
    pub written: PathBuf,
    pub wrote_csr: bool,
    /// The chain that was replaced (with `force`), kept at this path.
    pub replaced: Option<PathBuf>,
}

pub fn init(actor: &crate::Actor, req: &CaInit, pin: Option<Pin>) -> ApiResult<CaInitDone> {
    actor.require(crate::Permission::CaSetup)?;
    // Refused before a key is made: nothing is created in the HSM or KMS for a
    // root that would not be installed.
    if req.csr.is_none() && !req.force {
        refuse_existing(&req.out)?;
    }
    let uri = if req.generate_key { create_ca_key(&req.signer, pin.clone(), req.alg)? } else { req.signer.clone() };
    let mut s = open_signer(&uri, pin)?;
    if let Some(csr_path) = &req.csr {
        let der = ca::intermediate_csr(s.as_mut(), &req.subject)?;
        crate::settings::write_private(csr_path, &pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)))?;
        return Ok(CaInitDone {
            signer_uri: uri,
            key_generated: req.generate_key,
            written: csr_path.clone(),
            wrote_csr: true,
            replaced: None,
        });
    }
    let development = s.info().development;
    let root = ca::self_signed_root(s.as_mut(), &req.subject, req.days, development)?;
    let replaced = if req.force { keep_existing(&req.out)? } else { refuse_existing(&req.out).map(|()| None)? };
    imprint_station::write_chain(&req.out, &[root])?;
    Ok(CaInitDone { signer_uri: uri, key_generated: req.generate_key, written: req.out.clone(), wrote_csr: false, replaced })
}

/// What `ca import` did.
#[derive(Clone, Debug, Serialize)]
pub struct CaImported {
    /// Certificates in the installed chain.
    pub count: usize,
    /// The chain that was replaced (with `force`), kept at this path.
    pub replaced: Option<PathBuf>,
    /// The same chain was installed already: nothing was written.
    pub unchanged: bool,
    /// The chain's earliest notAfter (RFC 3339): no device certificate outlives it.
    pub not_after: String,
    /// Whole days until then.
    pub days_left: i64,
}

/// Install a chain (issuing CA first) after checking that every certificate
/// of it is valid now and that the issuing CA is the signer's key. An
/// installed chain is replaced only with `force` (and kept as a `.bak`);
/// installing the same chain again changes nothing.
pub fn import(actor: &crate::Actor, signer: &str, chain: &Path, out: &Path, force: bool, pin: Option<Pin>) -> ApiResult<CaImported> {
    actor.require(crate::Permission::CaSetup)?;
    let text = std::fs::read_to_string(chain).map_err(|e| ApiError::io(chain.display(), e))?;
    let certs = ca::load_chain_pem(&text)?;
    let first = certs.first().ok_or_else(|| ApiError::bad_request(format!("{} holds no certificate", chain.display())))?;
    let now = time::OffsetDateTime::now_utc();
    let validity = ca::check_chain_validity(&certs, now)?;
    let s = open_signer(signer, pin)?;
    ca::check_ca_matches_signer(first, s.as_ref())?;
    drop(s);
    let done = |replaced, unchanged| CaImported {
        count: certs.len(),
        replaced,
        unchanged,
        not_after: ca::rfc3339(validity.not_after),
        days_left: validity.days_left(now),
    };
    let installed = std::fs::read_to_string(out).ok().and_then(|t| ca::load_chain_pem(&t).ok());
    if installed.as_ref() == Some(&certs) {
        return Ok(done(None, true));
    }
    let replaced = if force { keep_existing(out)? } else { refuse_existing(out).map(|()| None)? };
    imprint_station::write_chain(out, &certs)?;
    Ok(done(replaced, false))
}

/// Refuse when a chain is installed at `out` ([`ca::CaError::Exists`], with
/// what it is and until when it is valid).
fn refuse_existing(out: &Path) -> ApiResult<()> {
    let text = match std::fs::read_to_string(out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ApiError::io(out.display(), e)),
    };
    let (subject, not_after) = match ca::load_chain_pem(&text).and_then(|c| ca::chain_validity(&c).map(|v| (c, v))) {
        Ok((chain, v)) => {
            let subject = chain.first().and_then(|d| imprint_core::issuance::summarize(d).ok()).map(|s| s.subject).unwrap_or_default();
            (subject, ca::rfc3339(v.not_after))
        }
        Err(e) => (format!("unreadable: {e}"), "?".into()),
    };
    Err(ca::CaError::Exists { path: out.display().to_string(), subject, not_after }.into())
}

/// Copy the chain installed at `out`, if any, to `<out>.<UTC time>.bak`
/// (0600) before it is replaced; the backup's path.
fn keep_existing(out: &Path) -> ApiResult<Option<PathBuf>> {
    let bytes = match std::fs::read(out) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ApiError::io(out.display(), e)),
    };
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
        .map_err(|e| ApiError::internal(format!("formatting a time: {e}")))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ca-chain.pem".into());
    let mut backup = out.with_file_name(format!("{name}.{stamp}.bak"));
    let mut n = 1;
    while backup.exists() {
        backup = out.with_file_name(format!("{name}.{stamp}-{n}.bak"));
        n += 1;
    }
    imprint_station::fsutil::write_private_file(&backup, &bytes).map_err(|e| ApiError::io(backup.display(), e))?;
    tracing::warn!(chain = %out.display(), kept = %backup.display(), "replacing the installed CA chain (--force); the old one is kept");
    Ok(Some(backup))
}

/// One certificate of the chain, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct CaCertView {
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    pub not_before: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
}

pub fn show(chain_path: &Path) -> ApiResult<Vec<CaCertView>> {
    let text = std::fs::read_to_string(chain_path).map_err(|e| {
        ApiError::new(crate::ErrorCode::Ca, format!("no CA chain at {} ({e}): create one with `imprint ca init`", chain_path.display()))
    })?;
    ca::load_chain_pem(&text)?
        .iter()
        .map(|der| {
            let s = imprint_core::issuance::summarize(der).map_err(|e| ApiError::new(crate::ErrorCode::Ca, e))?;
            Ok(CaCertView {
                subject: s.subject,
                issuer: s.issuer,
                serial_hex: s.serial_hex,
                not_before: imprint_store::ts(s.not_before),
                not_after: imprint_store::ts(s.not_after),
                fingerprint_sha256: s.fingerprint_sha256,
            })
        })
        .collect()
}

/// [`init`] on this station, recorded in its audit trail (`ca_initialized`).
pub fn init_station(cfg: &imprint_station::StationConfig, actor: &crate::Actor, req: &CaInit, pin: Option<Pin>) -> ApiResult<CaInitDone> {
    let done = init(actor, req, pin)?;
    let detail = serde_json::json!({
        "signer": imprint_signer::display_uri(&done.signer_uri),
        "key_generated": done.key_generated,
        "wrote_csr": done.wrote_csr,
        "written": done.written.display().to_string(),
        "replaced": done.replaced.as_ref().map(|p| p.display().to_string()),
    });
    crate::with_local_store(cfg, |store| {
        crate::audit::record(store, Some(actor.id()), crate::audit::AuditKind::CaInitialized, None, detail);
        Ok(())
    })?;
    Ok(done)
}

/// [`import`] on this station, recorded in its audit trail (`ca_imported`).
pub fn import_station(
    cfg: &imprint_station::StationConfig,
    actor: &crate::Actor,
    signer: &str,
    chain: &Path,
    out: &Path,
    force: bool,
    pin: Option<Pin>,
) -> ApiResult<CaImported> {
    let done = import(actor, signer, chain, out, force, pin)?;
    if !done.unchanged {
        let detail = serde_json::json!({
            "signer": imprint_signer::display_uri(signer),
            "certificates": done.count,
            "not_after": done.not_after,
            "replaced": done.replaced.as_ref().map(|p| p.display().to_string()),
        });
        crate::with_local_store(cfg, |store| {
            crate::audit::record(store, Some(actor.id()), crate::audit::AuditKind::CaImported, None, detail);
            Ok(())
        })?;
    }
    Ok(done)
}
