//! The central schema: migrations (applied by an administrator only), the
//! version check every station makes, and station registration.

use crate::SyncError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection};
// Role names are checked by valid_role() and passwords quoted: DDL takes no bound parameters.
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

/// The central schema, embedded from `migrations/postgres`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The central schema version this build needs (the newest migration it carries).
pub fn required_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Apply every pending migration. For administrators (`imprint db migrate`);
/// stations never call this. Returns the schema version now in place.
pub async fn migrate(opts: &PgConnectOptions) -> Result<i64, SyncError> {
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    MIGRATOR.run(&mut conn).await.map_err(|e| SyncError::Migrate(e.to_string()))?;
    let v = schema_version(&mut conn).await?;
    let _ = conn.close().await;
    Ok(v.unwrap_or(0))
}

/// The newest successfully applied migration, or None if the database has no
/// Imprint schema at all.
pub async fn schema_version(conn: &mut PgConnection) -> Result<Option<i64>, SyncError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(None);
    }
    let v: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&mut *conn).await?;
    Ok(v)
}

/// What a station checks before it sends anything: the schema version is
/// exactly the one it was built for, and its login role is registered for
/// `station_id`. Never migrates.
/// Connect as `opts` and read the central schema version (None: not migrated).
pub async fn found_version(opts: &PgConnectOptions) -> Result<Option<i64>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    schema_version(&mut c).await
}

pub async fn check_station(conn: &mut PgConnection, station_id: &str) -> Result<(), SyncError> {
    let needed = required_version();
    match schema_version(conn).await? {
        None => {
            return Err(SyncError::Schema {
                found: 0,
                needed,
                hint: "the central database has no Imprint schema: an administrator runs `imprint db migrate --url ...`",
            })
        }
        Some(found) if found < needed => {
            return Err(SyncError::Schema {
                found,
                needed,
                hint: "the central schema is older than this station: an administrator runs `imprint db migrate --url ...` (stations never migrate)",
            })
        }
        Some(found) if found > needed => {
            return Err(SyncError::Schema {
                found,
                needed,
                hint: "the central schema is newer than this station: upgrade the station software",
            })
        }
        Some(_) => {}
    }
    let registered: Option<String> = sqlx::query_scalar("SELECT imprint_station_id()").fetch_one(&mut *conn).await?;
    match registered {
        None => Err(SyncError::Registration(
            "this login role is not registered as a station: an administrator runs `imprint db add-station`".into(),
        )),
        Some(id) if id != station_id => Err(SyncError::Registration(format!(
            "this login role syncs for station {id:?}, but this station is configured as {station_id:?}"
        ))),
        Some(_) => Ok(()),
    }
}

fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 63
        && role.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !role.starts_with(|c: char| c.is_ascii_digit())
}

/// Register a station: create (or update) its login role with `password`,
/// make it a member of `imprint_station`, and record it in `stations`.
/// The statement carrying the password is not logged.
pub async fn add_station(admin: &PgConnectOptions, station_id: &str, role: &str, password: &str) -> Result<(), SyncError> {
    if !valid_role(role) {
        return Err(SyncError::Config("a station role is lower-case letters, digits and '_' (at most 63)".into()));
    }
    if station_id.is_empty() {
        return Err(SyncError::Config("the station id is empty".into()));
    }
    let opts = admin.clone().log_statements(log::LevelFilter::Off);
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let mut tx = conn.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(role).fetch_one(&mut *tx).await?;
    let pw = password.replace('\'', "''");
    if exists {
        sqlx::raw_sql(AssertSqlSafe(format!("ALTER ROLE {role} WITH LOGIN PASSWORD '{pw}'"))).execute(&mut *tx).await?;
    } else {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE ROLE {role} WITH LOGIN PASSWORD '{pw}'"))).execute(&mut *tx).await?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!("GRANT imprint_station TO {role}"))).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO stations (id, db_role) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET db_role = excluded.db_role")
        .bind(station_id)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let _ = conn.close().await;
    Ok(())
}

/// Create (or update) a read-only login role for reports across stations.
pub async fn add_reader(admin: &PgConnectOptions, role: &str, password: &str) -> Result<(), SyncError> {
    login_role_in(admin, role, password, "reader", "imprint_reader").await
}

/// Create (or re-password) a login role that manages work orders at the
/// center: a member of `imprint_supervisor` (central schema 12), never of
/// `imprint_station`.
pub async fn add_supervisor(admin: &PgConnectOptions, role: &str, password: &str) -> Result<(), SyncError> {
    login_role_in(admin, role, password, "supervisor", "imprint_supervisor").await
}

/// Create `role` as a login role with `password` (or give an existing one the
/// new password) and make it a member of `group`. `what` names the kind of
/// role in the error for an invalid name. Statements are not logged (the
/// password is in them).
async fn login_role_in(admin: &PgConnectOptions, role: &str, password: &str, what: &str, group: &str) -> Result<(), SyncError> {
    if !valid_role(role) {
        return Err(SyncError::Config(format!("a {what} role is lower-case letters, digits and '_' (at most 63)")));
    }
    let opts = admin.clone().log_statements(log::LevelFilter::Off);
    let mut conn = opts.connect().await.map_err(SyncError::connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(role).fetch_one(&mut conn).await?;
    let pw = password.replace('\'', "''");
    let verb = if exists { "ALTER" } else { "CREATE" };
    sqlx::raw_sql(AssertSqlSafe(format!("{verb} ROLE {role} WITH LOGIN PASSWORD '{pw}'"))).execute(&mut conn).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("GRANT {group} TO {role}"))).execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

/// `imprint_station` rows visible to this connection's role, for status displays.
pub async fn last_sync_of(conn: &mut PgConnection, station_id: &str) -> Result<Option<time::OffsetDateTime>, SyncError> {
    let r = sqlx::query("SELECT last_sync_at FROM stations WHERE id = $1").bind(station_id).fetch_optional(&mut *conn).await?;
    Ok(match r {
        Some(r) => r.try_get(0)?,
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert!(valid_role("imprint_st_line1"));
        for bad in ["", "Robert'); DROP", "1abc", "a-b", "a b"] {
            assert!(!valid_role(bad), "{bad}");
        }
    }

    #[test]
    fn the_build_carries_a_schema_version() {
        assert!(required_version() >= 1);
    }
}
