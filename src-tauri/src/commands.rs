//! Tauri commands: convert, call the library, convert back. Anything that
//! touches the disk, a port or the signer runs on a blocking thread.

use crate::dto::*;
use crate::state::AppState;
use imprint_station::Mode;
use imprint_store::AttemptFilter;
use tauri::State;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tauri::async_runtime::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new("internal", format!("background task failed: {e}")))?
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Auto => "auto",
        Mode::Manual => "manual",
    }
}

fn parse_mode(s: &str) -> ApiResult<Mode> {
    match s {
        "auto" => Ok(Mode::Auto),
        "manual" => Ok(Mode::Manual),
        other => Err(ApiError::new("bad_request", format!("unknown mode {other:?}: use auto or manual"))),
    }
}

#[tauri::command]
pub async fn station_info(state: State<'_, AppState>) -> ApiResult<StationInfo> {
    let cfg = state.config();
    let st = state.station().ok();
    let (signer_uri, signer_kind, ca_subject, development, batch) = match &st {
        Some(s) => {
            let i = s.signer().info();
            (i.uri.clone(), i.kind.to_string(), s.ctx().issuer_dn.clone(), s.ctx().development, s.ctx().batch())
        }
        None => (cfg.signer_uri(), String::new(), String::new(), cfg.is_development(), cfg.batch.clone()),
    };
    Ok(StationInfo {
        station_id: cfg.station_id.clone(),
        development,
        ready: st.is_some(),
        needs_pin: state.needs_pin(),
        startup_error: state.startup_error(),
        signer_uri,
        signer_kind,
        ca_subject,
        data_dir: cfg.data_dir.display().to_string(),
        log_dir: cfg.log_dir().display().to_string(),
        mode: mode_str(state.mode()).into(),
        batch,
        simulated: state.simulated(),
    })
}

#[tauri::command]
pub async fn bench_tiles(state: State<'_, AppState>) -> ApiResult<Vec<TileDto>> {
    Ok(state.bench()?.tiles().into_iter().map(TileDto::from).collect())
}

#[tauri::command]
pub async fn provision(state: State<'_, AppState>, port: String) -> ApiResult<()> {
    state.bench()?.provision(&port).map_err(|e| match e {
        imprint_station::BenchError::NoSuchPort(_) => ApiError::new("no_such_port", e.to_string()),
        imprint_station::BenchError::Busy(_) => ApiError::new("busy", e.to_string()),
        imprint_station::BenchError::Stopping => ApiError::new("station_stopping", e.to_string()),
    })
}

#[tauri::command]
pub async fn provision_all(state: State<'_, AppState>) -> ApiResult<u32> {
    Ok(state.bench()?.provision_all_ready() as u32)
}

#[tauri::command]
pub async fn set_mode(state: State<'_, AppState>, mode: String) -> ApiResult<String> {
    let m = parse_mode(&mode)?;
    state.bench()?.set_mode(m);
    Ok(mode_str(m).into())
}

#[tauri::command]
pub async fn set_batch(state: State<'_, AppState>, batch: Option<String>) -> ApiResult<Option<String>> {
    let st = state.station()?;
    st.set_batch(batch);
    Ok(st.ctx().batch())
}

/// A barcode scan (or typed code): `WO:<x>` / `BATCH:<x>` sets the work
/// order; anything else is matched against the devices on the bench.
#[tauri::command]
pub async fn scan(state: State<'_, AppState>, code: String) -> ApiResult<ScanResult> {
    let code = code.trim().to_string();
    if code.is_empty() {
        return Err(ApiError::new("bad_request", "empty scan"));
    }
    let upper = code.to_ascii_uppercase();
    for prefix in ["WO:", "BATCH:"] {
        if upper.starts_with(prefix) {
            let batch = code[prefix.len()..].trim().to_string();
            let st = state.station()?;
            st.set_batch(Some(batch.clone()));
            return Ok(ScanResult { kind: "batch".into(), message: format!("work order set to {batch}"), port: None });
        }
    }
    match state.bench()?.find_serial(&code) {
        Some(t) => Ok(ScanResult { kind: "device".into(), message: format!("{code} is on slot {}", t.slot), port: Some(t.port) }),
        None => Ok(ScanResult {
            kind: "unknown".into(),
            message: format!("no device with serial {code} is on the bench (work orders start with WO:)"),
            port: None,
        }),
    }
}

#[tauri::command]
pub async fn simulate(state: State<'_, AppState>, count: u32, faults: Vec<String>) -> ApiResult<u32> {
    if count == 0 || count > 64 {
        return Err(ApiError::new("bad_request", "count must be 1..64"));
    }
    let st = state.inner().clone();
    blocking(move || st.attach_simulated(count as usize, &faults)).await
}

fn attempt_dto(a: imprint_store::AttemptRow, cert_serial: Option<String>) -> AttemptDto {
    AttemptDto {
        id: a.id,
        port: a.port,
        started_at: a.started_at,
        finished_at: a.finished_at,
        status: a.status,
        stage: a.stage,
        code: a.code,
        reason: a.reason,
        hint: a.hint,
        device_serial: a.device_serial,
        model: a.model,
        fw_version: a.fw_version,
        batch: a.batch,
        cert_serial,
        resumed: a.resumed,
    }
}

fn store_err(e: imprint_store::StoreError) -> ApiError {
    ApiError::new("store", e.to_string())
}

#[tauri::command]
pub async fn history(state: State<'_, AppState>, filter: HistoryFilter) -> ApiResult<Vec<AttemptDto>> {
    let st = state.station()?;
    blocking(move || {
        let blank = |s: Option<String>| s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let rows = st
            .store()
            .attempts(&AttemptFilter {
                device_serial: blank(filter.device_serial),
                status: blank(filter.status),
                batch: blank(filter.batch),
                cert_serial: blank(filter.cert_serial),
                since: blank(filter.since),
                limit: Some(filter.limit.unwrap_or(200).min(5000)),
            })
            .map_err(store_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for a in rows {
            let serial = match &a.certificate_id {
                Some(id) => st.store().cert_by_id(id).map_err(store_err)?.map(|c| c.serial_hex),
                None => None,
            };
            out.push(attempt_dto(a, serial));
        }
        Ok(out)
    })
    .await
}

#[tauri::command]
pub async fn record(state: State<'_, AppState>, id: String) -> ApiResult<RecordDetail> {
    let st = state.station()?;
    blocking(move || {
        let a = st.store().attempt(&id).map_err(store_err)?.ok_or_else(|| ApiError::new("not_found", format!("no attempt {id}")))?;
        let steps = st.store().steps(&id).map_err(store_err)?;
        let cert = match &a.certificate_id {
            Some(c) => st.store().cert_by_id(c).map_err(store_err)?,
            None => None,
        };
        let certificate = cert.and_then(|c| {
            let der = c.cert_der.clone()?;
            let s = imprint_core::issuance::summarize(&der).ok()?;
            Some(CertificateDto {
                serial_hex: c.serial_hex,
                status: c.status,
                subject: s.subject,
                issuer: s.issuer,
                not_before: imprint_store::ts(s.not_before),
                not_after: imprint_store::ts(s.not_after),
                fingerprint_sha256: s.fingerprint_sha256,
                pem: pem_encode(&der),
            })
        });
        let (hw_rev, fw_hash, chip_uid) = (a.hw_rev.clone(), a.fw_hash.clone(), a.chip_uid.clone());
        let serial = certificate.as_ref().map(|c| c.serial_hex.clone());
        Ok(RecordDetail {
            attempt: attempt_dto(a, serial),
            hw_rev,
            fw_hash,
            chip_uid,
            steps: steps.into_iter().map(|s| StepDto { at: s.at, stage: s.stage, kind: s.kind, detail: s.detail }).collect(),
            certificate,
        })
    })
    .await
}

fn pem_encode(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[tauri::command]
pub async fn health(state: State<'_, AppState>) -> ApiResult<Vec<HealthItemDto>> {
    let st = match state.station() {
        Ok(s) => s,
        Err(e) => {
            return Ok(vec![HealthItemDto {
                id: "signer".into(),
                title: "CA signer".into(),
                level: "error".into(),
                detail: "the station could not open its signer".into(),
                last_error: Some(e.message),
            }])
        }
    };
    blocking(move || {
        Ok(imprint_station::health::check(&st)
            .into_iter()
            .map(|h| HealthItemDto {
                id: h.id,
                title: h.title,
                level: match h.level {
                    imprint_station::health::Level::Ok => "ok",
                    imprint_station::health::Level::Warn => "warn",
                    imprint_station::health::Level::Error => "error",
                    imprint_station::health::Level::Off => "off",
                }
                .into(),
                detail: h.detail,
                last_error: h.last_error,
            })
            .collect())
    })
    .await
}

#[tauri::command]
pub async fn get_settings(state: State<'_, AppState>) -> ApiResult<SettingsDto> {
    let c = state.config();
    Ok(SettingsDto {
        signer: c.signer.clone(),
        baud: c.baud,
        port_globs: c.port_globs.clone(),
        system_ports: c.system_ports,
        mode: mode_str(state.mode()).into(),
        batch: state.station().ok().and_then(|s| s.ctx().batch()).or(c.batch.clone()),
        station_id: c.station_id.clone(),
        profile_name: c.profile.name.clone(),
        validity_days: c.profile.validity_days,
        organization: c.profile.organization.clone(),
        device_key: match c.profile.device_key {
            imprint_core::issuance::KeyType::P256 => "p256".into(),
            imprint_core::issuance::KeyType::P384 => "p384".into(),
        },
        lock_device: c.profile.lock_device,
        config_path: state.config_path().display().to_string(),
    })
}

/// Validate, write the operator's config file (no secrets), and reopen the
/// station with it.
#[tauri::command]
pub async fn save_settings(state: State<'_, AppState>, settings: SettingsDto) -> ApiResult<StationInfo> {
    let mut c = state.config();
    c.signer = settings.signer.trim().to_string();
    c.baud = settings.baud;
    c.port_globs = settings.port_globs.into_iter().map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect();
    c.system_ports = settings.system_ports;
    c.mode = parse_mode(&settings.mode)?;
    c.batch = settings.batch.filter(|b| !b.trim().is_empty());
    c.station_id = settings.station_id.trim().to_string();
    c.profile.name = settings.profile_name;
    c.profile.validity_days = settings.validity_days;
    c.profile.organization = settings.organization.filter(|o| !o.trim().is_empty());
    c.profile.device_key = match settings.device_key.as_str() {
        "p256" => imprint_core::issuance::KeyType::P256,
        "p384" => imprint_core::issuance::KeyType::P384,
        other => return Err(ApiError::new("bad_request", format!("unknown key type {other}"))),
    };
    c.profile.lock_device = settings.lock_device;
    c.validate().map_err(|e| ApiError::new("invalid_settings", e))?;
    let text = toml_text(&c)?;
    imprint_station::StationConfig::parse(&text).map_err(|e| ApiError::new("invalid_settings", e))?;
    let path = state.config_path().clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ApiError::new("io", format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(&path, text).map_err(|e| ApiError::new("io", format!("{}: {e}", path.display())))?;
    state.set_config(c);
    let st = state.inner().clone();
    let _ = blocking(move || st.open(None)).await;
    station_info(state).await
}

fn toml_text(c: &imprint_station::StationConfig) -> ApiResult<String> {
    c.to_toml().map_err(|e| ApiError::new("internal", e))
}

/// The PIN goes from the dialog straight to the signer; it is never stored,
/// logged or returned.
#[tauri::command]
pub async fn submit_pin(state: State<'_, AppState>, pin: String) -> ApiResult<StationInfo> {
    if pin.is_empty() {
        return Err(ApiError::new("signer_pin_rejected", "enter the PIN"));
    }
    let st = state.inner().clone();
    blocking(move || st.open(Some(imprint_signer::Pin::new(pin)))).await?;
    station_info(state).await
}

/// Open a folder in the desktop's file manager.
pub fn open_dir(dir: &std::path::Path) -> ApiResult<()> {
    let _ = std::fs::create_dir_all(dir);
    std::process::Command::new("xdg-open")
        .arg(dir)
        .spawn()
        .map(|_| ())
        .map_err(|e| ApiError::new("io", format!("could not open {}: {e}", dir.display())))
}

#[tauri::command]
pub async fn open_log_folder(state: State<'_, AppState>) -> ApiResult<String> {
    let dir = state.config().log_dir();
    open_dir(&dir)?;
    Ok(dir.display().to_string())
}
