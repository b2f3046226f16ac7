//! The PostgreSQL side of the record descriptors (`imprint_store::synced`):
//! column types, and reading the center's rows back as the raw values the
//! content hash is computed from (tests and audits recompute hashes from the
//! center's columns with [`central_select`] and [`central_values`]).

use imprint_store::synced::{Kind, Table, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The PostgreSQL type a column of this kind is sent as (`UNNEST($n::type[])`).
pub fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Uuid => "uuid",
        Kind::Time => "timestamptz",
        Kind::Int => "int8",
        Kind::Bool => "bool",
        Kind::Bytes => "bytea",
    }
}

/// The type `information_schema.columns.data_type` names for this kind.
pub fn information_schema_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Uuid => "uuid",
        Kind::Time => "timestamp with time zone",
        Kind::Int => "bigint",
        Kind::Bool => "boolean",
        Kind::Bytes => "bytea",
    }
}

/// `c.col, ...` for every column of `table`, in descriptor order, then
/// `c.version, c.content_sha256`: the select list [`central_values`] reads.
pub fn central_select(table: &Table) -> String {
    let mut cols: Vec<String> = table.columns.iter().map(|c| format!("c.{}", c.name)).collect();
    cols.extend(["c.version".into(), "c.content_sha256".into()]);
    cols.join(", ")
}

/// A center's row (selected with [`central_select`]) as the raw values the
/// station holds: UUIDs as their text, times as RFC 3339 (the hash reads
/// them as instants), booleans as 0/1. Returns them with the row's version
/// and stored hash.
pub fn central_values(table: &Table, row: &PgRow) -> Result<(Vec<Value>, i64, Vec<u8>), sqlx::Error> {
    let mut v = Vec::with_capacity(table.columns.len());
    for (i, c) in table.columns.iter().enumerate() {
        v.push(
            match c.kind {
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                Kind::Uuid => row.try_get::<Option<uuid::Uuid>, _>(i)?.map(|u| Value::Text(u.to_string())),
                Kind::Time => row
                    .try_get::<Option<OffsetDateTime>, _>(i)?
                    .map(|t| Value::Text(t.format(&Rfc3339).unwrap_or_else(|_| imprint_store::ts(t)))),
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(|b| Value::Int(i64::from(b))),
                Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Blob),
            }
            .unwrap_or(Value::Null),
        );
    }
    let n = table.columns.len();
    Ok((v, row.try_get(n)?, row.try_get(n + 1)?))
}
