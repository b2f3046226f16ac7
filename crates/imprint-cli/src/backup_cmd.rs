//! `imprint backup` and `imprint restore` (admin): thin over
//! `imprint_api::backup`.

use crate::{json, load_config, operators_cmd, out, Cli, CmdResult};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BackupArgs {
    /// The backup file to write (never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Also put the DEVELOPMENT CA key in the backup (never an HSM or KMS key: those cannot leave their signer).
    #[arg(long)]
    include_dev_ca_key: bool,
    /// Print the backup report as one JSON object: path, bytes, encrypted, recipient, manifest, ms.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The age identity file that decrypts an encrypted backup.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Replace a store that holds newer records (it is kept beside the restored one), or take over another station's backup.
    #[arg(long)]
    force: bool,
    /// Only decrypt and check the backup; restore nothing.
    #[arg(long)]
    check: bool,
    /// Print the restore report as one JSON object (with --check: the backup's manifest).
    #[arg(long)]
    json: bool,
}

pub fn backup_cmd(cli: &Cli, a: &BackupArgs) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = operators_cmd::actor(cli, &cfg, false)?;
    let r = imprint_api::backup::backup(&me, &cfg, &a.out, a.include_dev_ca_key)?;
    if a.json {
        json(&r)?;
        return Ok(0);
    }
    let head = r.manifest.store.audit_head.as_ref().map_or(0, |h| h.seq);
    out(format!(
        "backup {} written and checked: {} bytes, {} attempts, {} certificates, audit head #{head}, {} ms",
        r.path.display(),
        r.bytes,
        r.manifest.store.attempts,
        r.manifest.store.certificates,
        r.ms
    ))?;
    match &r.recipient {
        Some(rcpt) => out(format!("encrypted to {rcpt}"))?,
        None => out("NOT encrypted: set [backup] recipient to an age public key to encrypt backups")?,
    }
    if r.manifest.includes_dev_ca_key {
        out("WARNING: THE DEVELOPMENT CA KEY IS IN THIS BACKUP: whoever reads the file can sign as this CA")?;
    }
    Ok(0)
}

pub fn restore_cmd(cli: &Cli, a: &RestoreArgs) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = operators_cmd::actor(cli, &cfg, false)?;
    if a.check {
        let m = imprint_api::backup::inspect(&me, &a.file, a.identity.as_deref())?;
        if a.json {
            json(&m)?;
        } else {
            out(format!(
                "backup of station {} taken {}: intact (digest, integrity, schema {}, audit chain to #{}), {} attempts",
                m.station_id,
                m.created_at,
                m.store.schema_version,
                m.store.audit_head.as_ref().map_or(0, |h| h.seq),
                m.store.attempts
            ))?;
        }
        return Ok(0);
    }
    let r = imprint_api::backup::restore(&me, &cfg, &a.file, a.identity.as_deref(), a.force)?;
    if a.json {
        json(&r)?;
        return Ok(0);
    }
    out(format!(
        "restored the backup of {} taken {} ({} attempts, audit head #{})",
        r.manifest.station_id,
        r.manifest.created_at,
        r.manifest.store.attempts,
        r.manifest.store.audit_head.as_ref().map_or(0, |h| h.seq)
    ))?;
    if let Some(k) = &r.replaced_kept_at {
        out(format!("the replaced store is kept at {}{}", k.display(), if r.forced { " (it held newer records: --force)" } else { "" }))?;
    }
    match (&r.relearned, &r.relearn_error) {
        (Some(l), _) => {
            out(format!("re-learned {} records from the center ({} certificates issued after the backup)", l.total(), l.certificates()))?
        }
        (None, Some(e)) => {
            out(format!("NOT yet re-learned from the center ({e}): the station re-learns before it provisions, when it next starts"))?
        }
        (None, None) => out("no central database configured: records made after the backup are not known to this station")?,
    }
    Ok(0)
}
