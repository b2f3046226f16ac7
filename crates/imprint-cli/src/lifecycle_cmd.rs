//! `imprint revoke` and `imprint crl generate` (supervisors): thin adapters
//! over `imprint_api::lifecycle`.

use crate::{json, load_config, out, pin, Cli, CmdResult, Fail};
use clap::{ArgGroup, Args, Subcommand};
use imprint_api::lifecycle::{self, RevokeSelector};
use imprint_api::ApiError;
use std::path::PathBuf;

#[derive(Args)]
#[command(group(ArgGroup::new("selector").required(true).multiple(true).args(["device", "cert_serial", "batch", "issued_since", "issued_until"])))]
pub struct RevokeArgs {
    /// Every certificate issued to this device serial.
    #[arg(long)]
    device: Option<String>,
    /// The certificate with this serial (hex).
    #[arg(long)]
    cert_serial: Option<String>,
    /// Every certificate issued in this work order / batch.
    #[arg(long)]
    batch: Option<String>,
    /// Every certificate issued at or after this date (2026-11-01) or RFC 3339 time.
    #[arg(long)]
    issued_since: Option<String>,
    /// ... and before this date or time.
    #[arg(long)]
    issued_until: Option<String>,
    /// RFC 5280 reason: unspecified, key_compromise, ca_compromise,
    /// affiliation_changed, superseded, cessation_of_operation,
    /// privilege_withdrawn (RFC names such as keyCompromise work too;
    /// certificateHold is not supported: a revocation is final).
    #[arg(long)]
    reason: String,
    /// Why, in words (kept with the revocation and in the audit trail; at most 500 characters).
    #[arg(long)]
    comment: Option<String>,
    /// Print the report as one JSON object: the certificates revoked now, those revoked before, the serials never issued.
    #[arg(long)]
    json: bool,
}

impl RevokeArgs {
    fn selector(&self) -> Result<RevokeSelector, Fail> {
        let range = self.issued_since.is_some() || self.issued_until.is_some();
        let picked = [self.device.is_some(), self.cert_serial.is_some(), self.batch.is_some(), range].iter().filter(|b| **b).count();
        if picked != 1 {
            return Err(Fail::Api(ApiError::bad_request(
                "name one selector: --device, --cert-serial, --batch, or an issue time range (--issued-since/--issued-until)",
            )));
        }
        Ok(if let Some(s) = &self.device {
            RevokeSelector::DeviceSerial { serial: s.clone() }
        } else if let Some(s) = &self.cert_serial {
            RevokeSelector::CertSerial { serial: s.clone() }
        } else if let Some(b) = &self.batch {
            RevokeSelector::Batch { batch: b.clone() }
        } else {
            RevokeSelector::IssuedBetween { since: self.issued_since.clone(), until: self.issued_until.clone() }
        })
    }
}

#[derive(Subcommand)]
pub enum CrlCmd {
    /// Generate a CRL signed by the CA signer and write it as PEM (0644: a CRL is public).
    Generate {
        /// Where to write the CRL (replaced atomically).
        #[arg(long)]
        out: PathBuf,
        /// Number it from the center's counter for this CA and list every
        /// station's revocations there (without: only this station's).
        #[arg(long)]
        central: bool,
        /// Print one JSON object: the CRL's path, scope, issuer, number, update times, entries and coverage.
        #[arg(long)]
        json: bool,
    },
}

pub fn revoke_cmd(cli: &Cli, a: &RevokeArgs) -> CmdResult {
    let cfg = load_config(cli)?;
    let sel = a.selector()?;
    let reason = lifecycle::parse_reason(&a.reason)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    let r = imprint_api::with_local_store(&cfg, |store| {
        store.set_station_id(&cfg.station_id);
        lifecycle::revoke(&me, store, &sel, reason, a.comment.as_deref())
    })?;
    if a.json {
        json(&r)?;
        return Ok(0);
    }
    for c in &r.revoked {
        out(format!("revoked  {}  {:<14} {}", c.serial_hex, c.device_serial, r.reason))?;
    }
    for c in &r.already_revoked {
        out(format!(
            "already  {}  {:<14} revoked {} ({})",
            c.serial_hex,
            c.device_serial,
            c.revoked_at.as_deref().unwrap_or("-"),
            c.reason.as_deref().unwrap_or("-")
        ))?;
    }
    for s in &r.not_issued {
        out(format!("skipped  {s}  never issued (journaled only): nothing to revoke"))?;
    }
    eprintln!(
        "{} revoked, {} already revoked, {} never issued ({})",
        r.revoked.len(),
        r.already_revoked.len(),
        r.not_issued.len(),
        r.selected
    );
    if !r.revoked.is_empty() {
        eprintln!(
            "{}",
            if cfg.central.is_some() {
                "the revocations are queued for the center: they sync with the station's next round (or `imprint sync now`)"
            } else {
                "no [central] configured: the revocations stay on this station; publish them with `imprint crl generate`"
            }
        );
    }
    Ok(0)
}

pub fn crl_cmd(cli: &Cli, c: &CrlCmd) -> CmdResult {
    let CrlCmd::Generate { out: path, central, json: as_json } = c;
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    let signer_pin = pin(cli)?;
    let r = imprint_api::with_local_store(&cfg, |store| {
        store.set_station_id(&cfg.station_id);
        lifecycle::generate_crl(&me, &cfg, store, signer_pin, path, *central)
    })?;
    if *as_json {
        json(&r)?;
        return Ok(0);
    }
    out(format!(
        "wrote CRL #{} of {} to {}: {} revoked certificate(s), this update {}, next update {}",
        r.number,
        r.issuer,
        r.path.display(),
        r.entries,
        r.this_update,
        r.next_update
    ))?;
    out(format!("covers {}", r.coverage))?;
    Ok(0)
}

#[derive(Subcommand)]
pub enum ReworkCmd {
    /// Authorise re-provisioning a device serial (supervisor): the next
    /// device reporting it is reset, makes a new key and gets a new
    /// certificate; the old certificate is revoked as superseded. Single-use,
    /// expires after `[rework] authorisation_hours` (default 24).
    Authorise {
        /// The device serial, as the device reports it (its label).
        #[arg(long)]
        serial: String,
        /// Why, in words (kept with the authorisation and in the audit trail; at most 500 characters).
        #[arg(long)]
        comment: Option<String>,
        /// Print the authorisation as one JSON object (with expires_at).
        #[arg(long)]
        json: bool,
    },
    /// Rework authorisations, newest first: open, used or expired.
    List {
        /// Only authorisations of this device serial.
        #[arg(long)]
        serial: Option<String>,
        /// Print the authorisations as a JSON array (state: open, used or expired).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Current certificates expiring within a window (expired ones too), soonest first.
    Expiring {
        /// The window in days from now.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// From the center: every station's certificates (as far as the role may read).
        #[arg(long)]
        central: bool,
        /// Print the certificates as a JSON array (days_left is negative for one expired).
        #[arg(long)]
        json: bool,
    },
}

pub fn rework_cmd(cli: &Cli, c: &ReworkCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    match c {
        ReworkCmd::Authorise { serial, comment, json: as_json } => {
            let r =
                imprint_api::with_local_store(&cfg, |store| imprint_api::rework::authorise(&me, &cfg, store, serial, comment.as_deref()))?;
            if *as_json {
                json(&r)?;
                return Ok(0);
            }
            out(format!(
                "rework of {} authorised until {} (single use): attach the device; it is reset, re-keyed and re-certified, and its old certificate revoked as superseded",
                r.device_serial, r.expires_at
            ))?;
            Ok(0)
        }
        ReworkCmd::List { serial, json: as_json } => {
            let rows = imprint_api::with_local_store(&cfg, |store| imprint_api::rework::authorisations(&me, store, serial.as_deref()))?;
            if *as_json {
                json(&rows)?;
                return Ok(0);
            }
            for r in &rows {
                let state = match r.state {
                    imprint_api::rework::ReworkState::Used => format!("used {}", r.used_at.as_deref().unwrap_or("-")),
                    imprint_api::rework::ReworkState::Expired => format!("expired {}", r.expires_at),
                    imprint_api::rework::ReworkState::Open => format!("open until {}", r.expires_at),
                };
                out(format!(
                    "{:<16} {}  by {:<12} {}{}",
                    r.device_serial,
                    r.authorised_at,
                    r.authorised_by.as_deref().unwrap_or("-"),
                    state,
                    r.comment.as_deref().map(|c| format!("  ({c})")).unwrap_or_default()
                ))?;
            }
            Ok(0)
        }
    }
}

pub fn certs_cmd(cli: &Cli, c: &CertsCmd) -> CmdResult {
    let CertsCmd::Expiring { days, central, json: as_json } = c;
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    let rows = if *central {
        imprint_api::rework::expiring(&me, &cfg, None, *days, true)?
    } else {
        imprint_api::with_local_store(&cfg, |store| imprint_api::rework::expiring(&me, &cfg, Some(store), *days, false))?
    };
    if *as_json {
        json(&rows)?;
        return Ok(0);
    }
    for r in &rows {
        out(format!("{:<16} {}  not after {}  {:>5} days  {}", r.device_serial, r.serial_hex, r.not_after, r.days_left, r.station_id))?;
    }
    eprintln!("{} certificate(s) expire within {days} days{}", rows.len(), if *central { " (center)" } else { " (this station)" });
    Ok(0)
}
