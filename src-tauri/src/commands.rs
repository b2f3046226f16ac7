//! Tauri commands: each one maps its arguments to one `imprint-api` call
//! (blocking work on a blocking thread) and returns its result or its coded
//! error. No provisioning logic lives here.

use imprint_api::auth::{NewOperator, OperatorEdit, OperatorView};
use imprint_api::central::{QuarantineReleasedView, QuarantineView};
use imprint_api::engine::BenchSnapshot;
use imprint_api::health::HealthView;
use imprint_api::lifecycle::{RevokeReport, RevokeSelector};
use imprint_api::qa::{QaDueView, QaVerdictView};
use imprint_api::records::{AttemptView, HistoryFilter, RecordDetail};
use imprint_api::reports::{Report, ReportFilter, ReportFormat};
use imprint_api::rework::{ExpiringCertView, ReworkAuthorisationView};
use imprint_api::scan::ScanResult;
use imprint_api::settings::{SettingChange, SettingsView};
use imprint_api::work_orders::{WorkOrderChange, WorkOrderRequest, WorkOrderView};
use imprint_api::{
    api::Attached, api::ModeChange, api::SessionView, Api, ApiError, ApiResult, Credentials, Mode, Pin, StationInfo, SyncView,
};
use tauri::State;

/// Run `f` on a blocking thread (disk, ports, the signer).
async fn blocking<T: Send + 'static>(api: &Api, f: impl FnOnce(Api) -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    let api = api.clone();
    tauri::async_runtime::spawn_blocking(move || f(api)).await.map_err(|e| ApiError::internal(format!("a background task failed: {e}")))?
}

#[tauri::command]
pub async fn station_info(api: State<'_, Api>) -> ApiResult<StationInfo> {
    Ok(api.info())
}

#[tauri::command]
pub async fn bench_tiles(api: State<'_, Api>) -> ApiResult<BenchSnapshot> {
    api.bench_snapshot()
}

#[tauri::command]
pub async fn provision(api: State<'_, Api>, port: String) -> ApiResult<()> {
    api.provision(&port)
}

#[tauri::command]
pub async fn provision_all(api: State<'_, Api>) -> ApiResult<u32> {
    api.provision_all()
}

#[tauri::command]
pub async fn set_mode(api: State<'_, Api>, mode: String) -> ApiResult<ModeChange> {
    // Parsed here (not by serde) so a wrong name gets a coded error.
    api.set_mode(mode.parse::<Mode>().map_err(ApiError::bad_request)?)
}

#[tauri::command]
pub async fn set_batch(api: State<'_, Api>, batch: Option<String>) -> ApiResult<Option<String>> {
    api.set_batch(batch)
}

#[tauri::command]
pub async fn scan(api: State<'_, Api>, code: String) -> ApiResult<ScanResult> {
    api.scan(&code)
}

#[tauri::command]
pub async fn simulate(api: State<'_, Api>, count: u32, faults: Vec<String>) -> ApiResult<Attached> {
    blocking(&api, move |a| a.attach_simulated(count, &faults)).await
}

#[tauri::command]
pub async fn history(api: State<'_, Api>, filter: HistoryFilter) -> ApiResult<Vec<AttemptView>> {
    blocking(&api, move |a| a.history(&filter)).await
}

#[tauri::command]
pub async fn record(api: State<'_, Api>, id: String) -> ApiResult<RecordDetail> {
    blocking(&api, move |a| a.record(&id)).await
}

/// Revoke certificates (supervisor): `selector` as `{"by": "cert_serial", "serial": ...}` etc.
#[tauri::command]
pub async fn revoke(api: State<'_, Api>, selector: RevokeSelector, reason: String, comment: Option<String>) -> ApiResult<RevokeReport> {
    blocking(&api, move |a| a.revoke(&selector, &reason, comment.as_deref())).await
}

/// The quarantined records not released yet.
#[tauri::command]
pub async fn quarantined(api: State<'_, Api>) -> ApiResult<Vec<QuarantineView>> {
    blocking(&api, move |a| a.quarantined()).await
}

/// Release a quarantined record once its conflict is resolved (supervisor).
#[tauri::command]
pub async fn release_quarantine(api: State<'_, Api>, id: i64, comment: String) -> ApiResult<QuarantineReleasedView> {
    blocking(&api, move |a| a.release_quarantine(id, &comment)).await
}

/// Authorise rework of a device serial (supervisor).
#[tauri::command]
pub async fn authorise_rework(api: State<'_, Api>, serial: String, comment: Option<String>) -> ApiResult<ReworkAuthorisationView> {
    blocking(&api, move |a| a.authorise_rework(&serial, comment.as_deref())).await
}

/// Current certificates expiring within `days` (this station, or `central`).
#[tauri::command]
pub async fn certs_expiring(api: State<'_, Api>, days: u32, central: bool) -> ApiResult<Vec<ExpiringCertView>> {
    blocking(&api, move |a| a.certs_expiring(days, central)).await
}

/// Work orders with issued / quantity.
#[tauri::command]
pub async fn work_orders(api: State<'_, Api>) -> ApiResult<Vec<WorkOrderView>> {
    blocking(&api, move |a| a.work_orders()).await
}

/// Create a work order (supervisor).
#[tauri::command]
pub async fn add_work_order(api: State<'_, Api>, request: WorkOrderRequest) -> ApiResult<WorkOrderView> {
    blocking(&api, move |a| a.add_work_order(&request)).await
}

/// Change a work order's product, quantity or validity window (supervisor).
#[tauri::command]
pub async fn edit_work_order(api: State<'_, Api>, change: WorkOrderChange) -> ApiResult<WorkOrderView> {
    blocking(&api, move |a| a.edit_work_order(&change)).await
}

/// Close a work order (supervisor).
#[tauri::command]
pub async fn close_work_order(api: State<'_, Api>, id: String) -> ApiResult<WorkOrderView> {
    blocking(&api, move |a| a.close_work_order(&id)).await
}

#[tauri::command]
pub async fn verify(api: State<'_, Api>, port: String) -> ApiResult<QaVerdictView> {
    blocking(&api, move |a| a.verify(&port)).await
}

#[tauri::command]
pub async fn qa_verdicts(api: State<'_, Api>, device_serial: Option<String>) -> ApiResult<Vec<QaVerdictView>> {
    blocking(&api, move |a| a.qa_verdicts(device_serial.as_deref())).await
}

#[tauri::command]
pub async fn qa_due(api: State<'_, Api>, batch: Option<String>) -> ApiResult<Vec<QaDueView>> {
    blocking(&api, move |a| a.qa_due(batch.as_deref())).await
}

#[tauri::command]
pub async fn health(api: State<'_, Api>) -> ApiResult<Vec<HealthView>> {
    blocking(&api, |a| Ok(a.health())).await
}

#[tauri::command]
pub async fn get_settings(api: State<'_, Api>) -> ApiResult<SettingsView> {
    api.settings()
}

#[tauri::command]
pub async fn settings_changes(api: State<'_, Api>, settings: SettingsView) -> ApiResult<Vec<SettingChange>> {
    api.settings_changes(&settings)
}

#[tauri::command]
pub async fn save_settings(api: State<'_, Api>, settings: SettingsView) -> ApiResult<StationInfo> {
    blocking(&api, move |a| a.save_settings(&settings)).await
}

/// The PIN goes from the dialog straight to the signer; it is never stored,
/// logged or returned.
#[tauri::command]
pub async fn submit_pin(api: State<'_, Api>, pin: String) -> ApiResult<StationInfo> {
    if pin.is_empty() {
        return Err(ApiError::bad_request("enter the PIN"));
    }
    blocking(&api, move |a| {
        // A wrong PIN is reported in the info (needs_pin with the reason).
        let _ = a.open(Some(Pin::new(pin)));
        Ok(a.info())
    })
    .await
}

#[tauri::command]
pub async fn sync_status(api: State<'_, Api>) -> ApiResult<SyncView> {
    blocking(&api, |a| Ok(a.sync_view())).await
}

#[tauri::command]
pub async fn sync_now(api: State<'_, Api>) -> ApiResult<SyncView> {
    blocking(&api, |a| a.sync_now()).await
}

/// Open the log folder in the desktop's file manager (through the opener
/// plugin, not a shelled-out `xdg-open`); returns the folder.
#[tauri::command]
pub async fn open_log_folder<R: tauri::Runtime>(app: tauri::AppHandle<R>, api: State<'_, Api>) -> ApiResult<String> {
    use tauri_plugin_opener::OpenerExt;
    let dir = api.config().log_dir();
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::io(dir.display(), e))?;
    let shown = dir.display().to_string();
    app.opener().open_path(shown.clone(), None::<&str>).map_err(|e| ApiError::io(format!("opening {shown} (no file manager?)"), e))?;
    Ok(shown)
}

#[tauri::command]
pub async fn session(api: State<'_, Api>) -> ApiResult<SessionView> {
    blocking(&api, |a| Ok(a.session())).await
}

/// The PIN goes from the form to the check; it is never stored, logged or returned.
#[tauri::command]
pub async fn sign_in(api: State<'_, Api>, credentials: Credentials) -> ApiResult<SessionView> {
    blocking(&api, move |a| a.sign_in(&credentials)).await
}

#[tauri::command]
pub async fn sign_out(api: State<'_, Api>) -> ApiResult<SessionView> {
    Ok(api.sign_out())
}

#[tauri::command]
pub async fn create_first_admin(api: State<'_, Api>, operator: NewOperator) -> ApiResult<SessionView> {
    blocking(&api, move |a| a.create_first_admin(&operator)).await
}

#[tauri::command]
pub async fn operators(api: State<'_, Api>) -> ApiResult<Vec<OperatorView>> {
    blocking(&api, |a| a.operators()).await
}

#[tauri::command]
pub async fn add_operator(api: State<'_, Api>, operator: NewOperator) -> ApiResult<OperatorView> {
    blocking(&api, move |a| a.add_operator(&operator)).await
}

#[tauri::command]
pub async fn edit_operator(api: State<'_, Api>, id: String, edit: OperatorEdit) -> ApiResult<OperatorView> {
    blocking(&api, move |a| a.edit_operator(&id, &edit)).await
}

#[tauri::command]
pub async fn report(api: State<'_, Api>, filter: ReportFilter, central: bool) -> ApiResult<Report> {
    blocking(&api, move |a| a.report(&filter, central)).await
}

/// Write the report to the path the save dialog returned.
#[tauri::command]
pub async fn export_report(api: State<'_, Api>, filter: ReportFilter, central: bool, format: ReportFormat, path: String) -> ApiResult<u32> {
    blocking(&api, move |a| a.export_report(&filter, central, format, std::path::Path::new(&path))).await
}
