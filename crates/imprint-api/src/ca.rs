//! CA set-up: create the CA key (in the HSM / KMS) and a self-signed root or
//! an intermediate CSR, import the chain a root signed, show the chain.

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
}

pub fn init(actor: &crate::Actor, req: &CaInit, pin: Option<Pin>) -> ApiResult<CaInitDone> {
    actor.require(crate::Permission::CaSetup)?;
    let uri = if req.generate_key { create_ca_key(&req.signer, pin.clone(), req.alg)? } else { req.signer.clone() };
    let mut s = open_signer(&uri, pin)?;
    if let Some(csr_path) = &req.csr {
        let der = ca::intermediate_csr(s.as_mut(), &req.subject)?;
        crate::settings::write_private(csr_path, &pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)))?;
        return Ok(CaInitDone { signer_uri: uri, key_generated: req.generate_key, written: csr_path.clone(), wrote_csr: true });
    }
    let development = s.info().development;
    let root = ca::self_signed_root(s.as_mut(), &req.subject, req.days, development)?;
    imprint_station::write_chain(&req.out, &[root])?;
    Ok(CaInitDone { signer_uri: uri, key_generated: req.generate_key, written: req.out.clone(), wrote_csr: false })
}

/// Install a chain (issuing CA first) after checking it is the signer's key; returns the count.
pub fn import(actor: &crate::Actor, signer: &str, chain: &Path, out: &Path, pin: Option<Pin>) -> ApiResult<usize> {
    actor.require(crate::Permission::CaSetup)?;
    let text = std::fs::read_to_string(chain).map_err(|e| ApiError::io(chain.display(), e))?;
    let certs = ca::load_chain_pem(&text)?;
    let s = open_signer(signer, pin)?;
    let first = certs.first().ok_or_else(|| ApiError::bad_request(format!("{} holds no certificate", chain.display())))?;
    ca::check_ca_matches_signer(first, s.as_ref())?;
    imprint_station::write_chain(out, &certs)?;
    Ok(certs.len())
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
