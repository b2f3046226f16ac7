//! Operators managed at the center (`central_operators`, migration 0006):
//! the administrator's operations (list, add, change) over an admin
//! connection, and the station's copy of the table into its local store on
//! every sync round ([`pull`]), so sign-in works offline and a disabled
//! operator is refused after the next sync.

use crate::SyncError;
use imprint_store::operators::{CentralApplied, CentralOperator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

/// Every central operator, by id.
pub async fn fetch(conn: &mut PgConnection) -> Result<Vec<CentralOperator>, SyncError> {
    let rows = sqlx::query("SELECT id, display_name, role, pin_hash, badge_sha256, enabled FROM central_operators ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CentralOperator {
                id: r.try_get(0)?,
                display_name: r.try_get(1)?,
                role: r.try_get(2)?,
                pin_hash: r.try_get(3)?,
                badge_sha256: r.try_get(4)?,
                enabled: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(SyncError::from)
}

/// Copy the center's operators into the station's store (one sync round's step).
pub async fn pull(conn: &mut PgConnection, store: std::sync::Arc<imprint_store::Store>) -> Result<CentralApplied, SyncError> {
    let rows = fetch(conn).await?;
    let applied = tokio::task::spawn_blocking(move || store.apply_central_operators(rows))
        .await
        .map_err(|e| SyncError::Config(format!("a local store task failed: {e}")))??;
    if applied != CentralApplied::default() {
        tracing::info!(added = applied.added, updated = applied.updated, disabled = applied.disabled, "operators copied from the center");
    }
    Ok(applied)
}

/// Every central operator (administrator).
pub async fn list(admin: &PgConnectOptions) -> Result<Vec<CentralOperator>, SyncError> {
    let mut c = admin.connect().await.map_err(SyncError::connect)?;
    let r = fetch(&mut c).await;
    let _ = c.close().await;
    r
}

/// Add a central operator (administrator); `false` when the id or badge is taken.
pub async fn add(admin: &PgConnectOptions, op: &CentralOperator) -> Result<bool, SyncError> {
    let mut c = admin.connect().await.map_err(SyncError::connect)?;
    let n = sqlx::query(
        "INSERT INTO central_operators (id, display_name, role, pin_hash, badge_sha256, enabled) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
    )
    .bind(&op.id)
    .bind(&op.display_name)
    .bind(&op.role)
    .bind(&op.pin_hash)
    .bind(&op.badge_sha256)
    .bind(op.enabled)
    .execute(&mut c)
    .await?
    .rows_affected();
    let _ = c.close().await;
    Ok(n == 1)
}

/// A change to a central operator.
#[derive(Clone, Debug)]
pub enum CentralChange {
    Enabled(bool),
    Role(String),
    Pin(String),
    Badge(Option<String>),
}

/// Change a central operator (administrator); `false` when there is none.
pub async fn change(admin: &PgConnectOptions, id: &str, ch: &CentralChange) -> Result<bool, SyncError> {
    let mut c = admin.connect().await.map_err(SyncError::connect)?;
    let q = match ch {
        CentralChange::Enabled(e) => {
            sqlx::query("UPDATE central_operators SET enabled = $2, updated_at = now() WHERE id = $1").bind(id).bind(*e)
        }
        CentralChange::Role(r) => {
            sqlx::query("UPDATE central_operators SET role = $2, updated_at = now() WHERE id = $1").bind(id).bind(r.clone())
        }
        CentralChange::Pin(h) => {
            sqlx::query("UPDATE central_operators SET pin_hash = $2, updated_at = now() WHERE id = $1").bind(id).bind(h.clone())
        }
        CentralChange::Badge(b) => {
            sqlx::query("UPDATE central_operators SET badge_sha256 = $2, updated_at = now() WHERE id = $1").bind(id).bind(b.clone())
        }
    };
    let n = q.execute(&mut c).await?.rows_affected();
    let _ = c.close().await;
    Ok(n == 1)
}
