//! The synced record kinds, each defined once.
//!
//! A [`Table`] lists a record kind's columns in one place: name, local
//! (SQLite) source, [`Kind`], nullability and whether the column may change
//! over the record's life ([`Change`]). Everything the sync needs is derived
//! from it:
//! - here: the SQLite select list ([`Table::select`]) and the row mapping
//!   ([`read_values`]) used by the outbox reader, and the record's key;
//! - in `imprint-sync`: the content hash (fields in column order, encoded by
//!   kind), the PostgreSQL `UNNEST` types and binds of the INSERTs, the
//!   `UPDATE` (mutable columns set, fixed ones required equal), the
//!   verification `SELECT` by key, and the reading of the center's rows.
//!
//! Records travel as raw SQL values ([`Value`]), not as the store's typed
//! rows (`AttemptRow`, `CertRow`), so the sync does not depend on how the
//! application types a status or a time.
//!
//! The typed rows are read through the same descriptors: each is declared
//! with [`synced_row!`], which names its table; the select list is the
//! table's ([`Table::select_all`]), each field is read at its column's
//! position (a field that is no column of the table does not compile), and
//! [`SyncedRow::insert_in`] writes a whole row. A column of the table that is
//! neither a field of its row type nor listed in its `omits` fails
//! `every_column_of_each_table_is_in_the_migrations_its_descriptor_and_its_row_type`.
//! So a new column of a synced record is spelled in its migrations (SQLite
//! and PostgreSQL), its descriptor here and its row type, and a test fails
//! until all of them agree.
//!
//! **Column order is the hash's field order**: append new columns at the end
//! of `columns`, never reorder (a reordered list changes every record's hash,
//! and every record already at the center would be quarantined; the pinned
//! hashes in `crates/imprint-sync/tests/hash_pinned.rs` catch it). Tests
//! compare each table with `PRAGMA table_info` of a freshly migrated store
//! and with `information_schema.columns` of a freshly migrated center.

use crate::outbox::{Entity, RecordKey};

/// How a column's value is kept locally, sent to the center and hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SQLite TEXT; PostgreSQL `text`.
    Text,
    /// SQLite TEXT holding a UUID; PostgreSQL `uuid`; hashed as its text.
    Uuid,
    /// SQLite TEXT holding an RFC 3339 time; PostgreSQL `timestamptz`;
    /// hashed as the instant at microsecond precision.
    Time,
    /// SQLite INTEGER; PostgreSQL `int8`.
    Int,
    /// SQLite INTEGER (0 false, anything else true); PostgreSQL `bool`;
    /// hashed as the integer 0 or 1 (NULL as -1).
    Bool,
    /// SQLite BLOB; PostgreSQL `bytea`.
    Bytes,
}

impl Kind {
    /// The column type SQLite reports in `PRAGMA table_info`.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            Kind::Text | Kind::Uuid | Kind::Time => "TEXT",
            Kind::Int | Kind::Bool => "INTEGER",
            Kind::Bytes => "BLOB",
        }
    }
}

/// Whether a column may change after the record is first written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Part of the record's identity (the idempotency key at the center).
    Key,
    /// Never changes: an update at the center requires it equal.
    Fixed,
    /// Changes over the record's life: updated at the center while the
    /// center's copy may still change (and only these columns are granted
    /// UPDATE to the station role).
    Mutable,
}

/// One synced column.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The column's name at the center (and locally, unless `local` differs).
    pub name: &'static str,
    /// The local SQLite column it is read from.
    pub local: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    pub change: Change,
    /// A column appended after records were synced: hashed only when it
    /// is not NULL, so records that do not use it keep the hash the center
    /// already holds (see [`Column::added`]).
    pub added: bool,
}

const fn col(name: &'static str, kind: Kind, nullable: bool, change: Change) -> Column {
    Column { name, local: name, kind, nullable, change, added: false }
}

impl Column {
    const fn from(self, local: &'static str) -> Column {
        Column { local, ..self }
    }

    /// Mark a column appended to a table after its first release (every
    /// column added from now on: `col("operator", Text, true, Mutable).added()`).
    /// It must be nullable: a record written before it has NULL there, and
    /// its hash stays what it was.
    pub const fn added(self) -> Column {
        Column { added: true, ..self }
    }
}

/// One synced record kind.
#[derive(Debug)]
pub struct Table {
    pub entity: Entity,
    /// Local SQLite table.
    pub local: &'static str,
    /// Central PostgreSQL table.
    pub central: &'static str,
    /// Synced columns, in hash order (append only).
    pub columns: &'static [Column],
    /// Local columns that are deliberately not synced.
    pub local_only: &'static [&'static str],
    /// The central table has `received_at` (DEFAULT now(), set again by an update).
    pub received_at: bool,
}

/// Columns every central table has besides the record's own: who sent it,
/// at which version and its content hash (and `received_at` where
/// [`Table::received_at`]). The station role may update the last two on
/// tables with mutable columns.
pub const CENTRAL_SYNC_COLUMNS: &[&str] = &["station_id", "version", "content_sha256"];

use Change::{Fixed, Key, Mutable};
use Kind::{Bool, Bytes, Int, Text, Time, Uuid};

pub const ATTEMPTS: Table = Table {
    entity: Entity::Attempt,
    local: "attempts",
    central: "attempts",
    columns: &[
        col("id", Uuid, false, Key),
        col("port", Text, false, Fixed),
        col("started_at", Time, false, Fixed),
        col("finished_at", Time, true, Mutable),
        col("status", Text, false, Mutable),
        col("stage", Text, true, Mutable),
        col("code", Text, true, Mutable),
        col("reason", Text, true, Mutable),
        col("hint", Text, true, Mutable),
        col("retryable", Bool, true, Mutable),
        col("device_serial", Text, true, Mutable),
        col("model", Text, true, Mutable),
        col("hw_rev", Text, true, Mutable),
        col("fw_version", Text, true, Mutable),
        col("fw_hash", Text, true, Mutable),
        col("chip_uid", Text, true, Mutable),
        col("batch", Text, true, Fixed),
        col("spki_sha256", Text, true, Mutable),
        col("certificate_id", Uuid, true, Mutable),
        col("resumed", Bool, false, Mutable),
        col("bytes_to_device", Int, false, Mutable),
        col("bytes_from_device", Int, false, Mutable),
        // Appended with operators (schema 4): who started the attempt.
        col("operator", Text, true, Fixed).added(),
    ],
    local_only: &[],
    received_at: true,
};

pub const STEPS: Table = Table {
    entity: Entity::Step,
    local: "steps",
    central: "attempt_steps",
    columns: &[
        col("attempt_id", Uuid, false, Key),
        col("n", Int, false, Key).from("id"),
        col("at", Time, false, Fixed),
        col("stage", Text, false, Fixed),
        col("kind", Text, false, Fixed),
        col("detail", Text, false, Fixed),
    ],
    local_only: &[],
    received_at: false,
};

pub const CERTIFICATES: Table = Table {
    entity: Entity::Certificate,
    local: "certificates",
    central: "certificates",
    columns: &[
        col("id", Uuid, false, Key),
        col("attempt_id", Uuid, false, Fixed),
        col("device_serial", Text, false, Fixed),
        col("issuer", Text, false, Fixed),
        col("serial_hex", Text, false, Fixed),
        col("spki_sha256", Text, false, Fixed),
        col("spki_der", Bytes, false, Fixed),
        col("not_before", Time, false, Fixed),
        col("not_after", Time, false, Fixed),
        col("status", Text, false, Mutable),
        col("cert_der", Bytes, true, Mutable),
        col("fingerprint_sha256", Text, true, Mutable),
        col("created_at", Time, false, Fixed),
        col("issued_at", Time, true, Mutable),
        // Appended with revocation (schema 6): set once, when the
        // certificate is revoked; never changed after (triggers, both ends).
        col("revoked_at", Time, true, Mutable).added(),
        col("revocation_reason", Text, true, Mutable).added(),
        col("revocation_comment", Text, true, Mutable).added(),
        col("revoked_by", Text, true, Mutable).added(),
        // Appended with rework and renewal (schema 9): set once, when a
        // renewal or rework replaces the certificate.
        col("superseded_at", Time, true, Mutable).added(),
        col("superseded_by", Uuid, true, Mutable).added(),
    ],
    // The CA chain is the same for every certificate of an issuer.
    local_only: &["chain_der"],
    received_at: true,
};

/// The audit trail (`crate::audit`): entries never change. The local
/// `station_id` is not a synced column: the center's `station_id` (the
/// syncing station's) takes its place, and both are hashed in the entry.
pub const AUDIT: Table = Table {
    entity: Entity::Audit,
    local: "audit",
    central: "audit_trail",
    columns: &[
        col("id", Uuid, false, Key),
        col("seq", Int, false, Fixed),
        col("at", Time, false, Fixed),
        col("operator", Text, true, Fixed),
        col("kind", Text, false, Fixed),
        col("subject", Text, true, Fixed),
        col("detail", Text, false, Fixed),
        col("anchors", Text, false, Fixed),
        col("prev_hash", Text, false, Fixed),
        col("hash", Text, false, Fixed),
    ],
    local_only: &["station_id"],
    received_at: true,
};

/// QA verdicts (`crate::qa`): written once, never changed.
pub const QA_VERDICTS: Table = Table {
    entity: Entity::QaVerdict,
    local: "qa_verdicts",
    central: "qa_verdicts",
    columns: &[
        col("id", Uuid, false, Key),
        col("at", Time, false, Fixed),
        col("operator", Text, true, Fixed),
        col("port", Text, false, Fixed),
        col("device_serial", Text, false, Fixed),
        col("cert_serial_hex", Text, true, Fixed),
        col("certificate_id", Uuid, true, Fixed),
        col("batch", Text, true, Fixed),
        col("verdict", Text, false, Fixed),
        col("checks", Text, false, Fixed),
    ],
    local_only: &[],
    received_at: true,
};

/// Rework authorisations (`crate::rework`): written once; `used_at`,
/// `attempt_id` and `certificate_id` are set once, when a rework uses it.
pub const REWORK_AUTHORISATIONS: Table = Table {
    entity: Entity::ReworkAuthorisation,
    local: "rework_authorisations",
    central: "rework_authorisations",
    columns: &[
        col("id", Uuid, false, Key),
        col("device_serial", Text, false, Fixed),
        col("authorised_at", Time, false, Fixed),
        col("authorised_by", Text, true, Fixed),
        col("expires_at", Time, false, Fixed),
        col("comment", Text, true, Fixed),
        col("used_at", Time, true, Mutable),
        col("attempt_id", Uuid, true, Mutable),
        col("certificate_id", Uuid, true, Mutable),
    ],
    local_only: &[],
    received_at: true,
};

/// The station's lease journal (`crate::leases`): one entry per lease
/// event (asked, granted or refused, each use the center acknowledged,
/// settled), written once in the transaction that changes the lease, never
/// changed. The center compares it with its `work_order_leases`
/// (`lease_reconciliation`, migrations/postgres/0014_lease_journal.sql).
pub const LEASE_EVENTS: Table = Table {
    entity: Entity::LeaseEvent,
    local: "lease_journal",
    central: "lease_journal",
    columns: &[
        col("id", Uuid, false, Key),
        col("lease_id", Uuid, false, Fixed),
        col("work_order_id", Text, false, Fixed),
        col("at", Time, false, Fixed),
        col("event", Text, false, Fixed),
        col("asked", Int, true, Fixed),
        col("granted", Int, true, Fixed),
        col("used", Int, true, Fixed),
        col("returned", Int, true, Fixed),
        col("expires_at", Time, true, Fixed),
        col("central_free", Int, true, Fixed),
    ],
    local_only: &[],
    received_at: true,
};

/// Every synced table, in the order a batch sends them (audit entries last:
/// an entry anchors records sent in the same batch).
pub const TABLES: [&Table; 7] = [&ATTEMPTS, &CERTIFICATES, &STEPS, &QA_VERDICTS, &REWORK_AUTHORISATIONS, &LEASE_EVENTS, &AUDIT];

/// The table of a record kind.
pub fn table(entity: Entity) -> &'static Table {
    match entity {
        Entity::Attempt => &ATTEMPTS,
        Entity::Step => &STEPS,
        Entity::Certificate => &CERTIFICATES,
        Entity::Audit => &AUDIT,
        Entity::QaVerdict => &QA_VERDICTS,
        Entity::ReworkAuthorisation => &REWORK_AUTHORISATIONS,
        Entity::LeaseEvent => &LEASE_EVENTS,
    }
}

/// A raw SQL value as the local store holds it (STRICT tables: no REAL here).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    /// A BLOB, or TEXT that is not UTF-8 (the sync quarantines it as malformed).
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }
}

/// Byte-wise string equality usable in constants.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Table {
    /// How many local columns a typed row reads: the synced ones, then
    /// `local_only`.
    pub const fn width(&self) -> usize {
        self.columns.len() + self.local_only.len()
    }

    /// The position of a local column in [`Table::select_all`] order. In a
    /// constant (as [`synced_row!`] uses it) a name that is no column of the
    /// table is a compile error.
    pub const fn local_position(&self, local: &str) -> usize {
        let mut i = 0;
        while i < self.columns.len() {
            if same(self.columns[i].local, local) {
                return i;
            }
            i += 1;
        }
        let mut j = 0;
        while j < self.local_only.len() {
            if same(self.local_only[j], local) {
                return self.columns.len() + j;
            }
            j += 1;
        }
        panic!("a field of a synced row type is no column of its table (crates/imprint-store/src/synced.rs)")
    }

    /// Every local column's name, in [`Table::select_all`] order.
    pub fn locals(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.local).chain(self.local_only.iter().copied())
    }

    /// The select list of a typed row: the synced columns in order, then
    /// `local_only`, each prefixed with `alias.`.
    pub fn select_all(&self, alias: &str) -> String {
        self.locals().map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", ")
    }

    /// The local select list, each column prefixed with `alias.`.
    pub fn select(&self, alias: &str) -> String {
        self.columns.iter().map(|c| format!("{alias}.{}", c.local)).collect::<Vec<_>>().join(", ")
    }

    /// Position of a column by its (central) name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Positions of the key columns, in order.
    pub fn key_positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns.iter().enumerate().filter(|(_, c)| c.change == Change::Key).map(|(i, _)| i)
    }

    /// The key's values: the id and, for steps, the local number.
    fn key_values<'v>(&self, values: &'v [Value]) -> Option<(&'v str, i64)> {
        let mut k = self.key_positions();
        let id = values.get(k.next()?)?.as_text()?;
        let step_no = match k.next() {
            Some(i) => values.get(i)?.as_int()?,
            None => 0,
        };
        Some((id, step_no))
    }

    /// The record a row of this table is: attempts and certificates by id,
    /// steps by attempt id and local number. `None` if the key is malformed.
    pub fn record_key(&self, values: &[Value]) -> Option<RecordKey> {
        let (id, step_no) = self.key_values(values)?;
        Some(RecordKey { entity: self.entity, id: id.to_string(), step_no })
    }

    /// Whether a row is the record `key` names.
    pub fn is_record(&self, values: &[Value], key: &RecordKey) -> bool {
        key.entity == self.entity && self.key_values(values) == Some((key.id.as_str(), key.step_no))
    }
}

/// A typed row of a synced table, declared with [`synced_row!`]: its
/// fields are the table's local columns (less `OMITTED`), read and written
/// through the table's descriptor.
pub trait SyncedRow: Sized {
    /// The table the row type reads.
    const TABLE: &'static Table;
    /// The row type's fields (local column names), in declaration order.
    const FIELDS: &'static [&'static str];
    /// Local columns of the table the row type deliberately does not carry.
    const OMITTED: &'static [&'static str];

    /// Read a row whose columns, in [`Table::select_all`] order, start at
    /// position `first` (a joined query reads a second row type after
    /// `TABLE.width()` columns).
    fn read_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self>;

    /// Read a row selected with [`SyncedRow::select`].
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Self::read_at(r, 0)
    }

    /// Build a row from raw values in [`Table::select_all`] order (a record
    /// read from the center: its synced columns, then its `local_only` ones).
    fn from_values(values: &[Value]) -> rusqlite::Result<Self>;

    /// Insert the whole row into its table (every field, in one statement).
    fn insert_in(&self, c: &rusqlite::Connection) -> rusqlite::Result<usize>;

    /// The select list for [`SyncedRow::read`], each column prefixed with `alias.`.
    fn select(alias: &str) -> String {
        Self::TABLE.select_all(alias)
    }
}

/// One field of a row built from raw values: `values[i]` (NULL past the end)
/// converted as a SQLite value of that column would be.
#[doc(hidden)]
pub fn value_field<T: rusqlite::types::FromSql>(values: &[Value], i: usize) -> rusqlite::Result<T> {
    use rusqlite::types::{FromSqlError, ValueRef};
    let v = match values.get(i) {
        None | Some(Value::Null) => ValueRef::Null,
        Some(Value::Int(n)) => ValueRef::Integer(*n),
        Some(Value::Text(s)) => ValueRef::Text(s.as_bytes()),
        Some(Value::Blob(b)) => ValueRef::Blob(b),
    };
    let ty = v.data_type();
    T::column_result(v).map_err(|e| match e {
        FromSqlError::InvalidType => rusqlite::Error::InvalidColumnType(i, format!("column {i}"), ty),
        FromSqlError::OutOfRange(n) => rusqlite::Error::IntegralValueOutOfRange(i, n),
        other => rusqlite::Error::FromSqlConversionFailure(i, ty, Box::new(other)),
    })
}

/// Declare the typed row of a synced table: the struct, and its
/// [`SyncedRow`] impl reading each field at its column's position in the
/// table's descriptor. Field names are the table's local column names; a
/// column the type does not carry is listed in `omits [..]`.
///
/// ```ignore
/// synced_row! {
///     #[derive(Clone, Debug)]
///     pub struct StepRow: STEPS, omits [attempt_id, id] {
///         pub at: String, pub stage: String, pub kind: String, pub detail: String,
///     }
/// }
/// ```
macro_rules! synced_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident : $table:ident $(, omits [$($omit:ident),* $(,)?])? {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::synced::SyncedRow for $name {
            const TABLE: &'static $crate::synced::Table = &$crate::synced::$table;
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
            const OMITTED: &'static [&'static str] = &[$($(stringify!($omit)),*)?];

            fn read_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
                Ok($name {
                    $( $field: r.get(first + const { $crate::synced::$table.local_position(stringify!($field)) })?, )*
                })
            }

            fn from_values(values: &[$crate::synced::Value]) -> rusqlite::Result<Self> {
                Ok($name {
                    $( $field: $crate::synced::value_field(
                        values,
                        const { $crate::synced::$table.local_position(stringify!($field)) },
                    )?, )*
                })
            }

            fn insert_in(&self, c: &rusqlite::Connection) -> rusqlite::Result<usize> {
                let fields = <Self as $crate::synced::SyncedRow>::FIELDS;
                let marks: Vec<String> = (1..=fields.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {}({}) VALUES ({})",
                    $crate::synced::$table.local,
                    fields.join(", "),
                    marks.join(", ")
                );
                c.prepare_cached(&sql)?.execute(rusqlite::params![$(self.$field),*])
            }
        }
    };
}
pub(crate) use synced_row;

/// Read `n` columns of a row starting at `first` as raw values.
pub(crate) fn read_values(r: &rusqlite::Row<'_>, first: usize, n: usize) -> rusqlite::Result<Vec<Value>> {
    use rusqlite::types::ValueRef;
    (first..first + n)
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Text(b) => match std::str::from_utf8(b) {
                    Ok(s) => Value::Text(s.to_string()),
                    Err(_) => Value::Blob(b.to_vec()),
                },
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                // STRICT tables declare no REAL column: refuse rather than guess.
                ValueRef::Real(_) => {
                    return Err(rusqlite::Error::InvalidColumnType(i, "synced column".into(), rusqlite::types::Type::Real))
                }
            })
        })
        .collect()
}

impl crate::Store {
    /// Every record of a synced table with its raw values (tests, benches,
    /// reports that compare a station with the center).
    pub fn synced_records(&self, table: &'static Table) -> Result<Vec<(RecordKey, Vec<Value>)>, crate::StoreError> {
        self.read(move |c| {
            let mut s = c.prepare(&format!("SELECT {} FROM {} t", table.select("t"), table.local))?;
            let n = table.columns.len();
            let mut out = Vec::new();
            let mut rows = s.query([])?;
            while let Some(r) = rows.next()? {
                let v = read_values(r, 0, n)?;
                if let Some(k) = table.record_key(&v) {
                    out.push((k, v));
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// How a local table differs from its descriptor: columns missing or
    /// extra (less `local_only`), of another SQLite type or nullability.
    fn local_drift(c: &rusqlite::Connection, t: &Table) -> Vec<String> {
        let mut st = c.prepare(&format!("PRAGMA table_info({})", t.local)).unwrap();
        let info: Vec<(String, String, bool)> = st
            .query_map([], |r| {
                let (notnull, pk): (i64, i64) = (r.get(3)?, r.get(5)?);
                Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?, notnull == 0 && pk == 0))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut drift: Vec<String> = t
            .local_only
            .iter()
            .filter(|lo| !info.iter().any(|(n, _, _)| n == *lo))
            .map(|lo| format!("{}: no local_only column {lo}", t.local))
            .collect();
        let expected: std::collections::BTreeSet<(String, String, bool)> =
            t.columns.iter().map(|c| (c.local.to_string(), c.kind.sqlite_type().to_string(), c.nullable)).collect();
        let actual: std::collections::BTreeSet<(String, String, bool)> =
            info.into_iter().filter(|(n, _, _)| !t.local_only.contains(&n.as_str())).collect();
        drift.extend(expected.difference(&actual).map(|e| format!("{}: descriptor has {e:?}", t.local)));
        drift.extend(actual.difference(&expected).map(|a| format!("{}: store has {a:?}", t.local)));
        drift
    }

    /// The drift check, local half: every table's columns are exactly the
    /// columns of a freshly migrated store (less `local_only`), with the
    /// SQLite type and nullability its kind implies. The central half is
    /// `the_record_descriptors_match_the_freshly_migrated_central_schema`
    /// (tests/tests/sync_basic.rs).
    #[test]
    fn descriptors_match_the_freshly_migrated_sqlite_schema() {
        let d = tempfile::tempdir().unwrap();
        let s = crate::Store::open(&d.path().join("station.db")).unwrap();
        for t in TABLES {
            let drift = s.read(|c| Ok(local_drift(c, t))).unwrap();
            assert!(drift.is_empty(), "crates/imprint-store/src/synced.rs and migrations/sqlite differ: {drift:?}");
        }
        // The check sees drift: a column added by a migration but not to the descriptor.
        s.write(|t| Ok(t.execute_batch("ALTER TABLE steps ADD COLUMN extra TEXT")?)).unwrap();
        let drift = s.read(|c| Ok(local_drift(c, &STEPS))).unwrap();
        assert_eq!(drift, [r#"steps: store has ("extra", "TEXT", true)"#]);
    }

    /// How a row type differs from its table's descriptor: a local column
    /// that is neither a field nor omitted, a name both, or listed twice.
    /// (A field that is no column does not compile: `Table::local_position`.)
    fn row_drift<T: SyncedRow>(name: &str) -> Vec<String> {
        let t = T::TABLE;
        let mut drift = Vec::new();
        for c in t.locals() {
            match (T::FIELDS.iter().filter(|f| **f == c).count(), T::OMITTED.iter().filter(|o| **o == c).count()) {
                (1, 0) | (0, 1) => {}
                (0, 0) => drift.push(format!("{}.{c} is neither a field of {name} nor in its omits", t.local)),
                (f, o) => drift.push(format!("{}.{c} is {f} field(s) and {o} omit(s) of {name}", t.local)),
            }
        }
        drift.extend(
            T::OMITTED.iter().filter(|o| !t.locals().any(|c| c == **o)).map(|o| format!("{name} omits {o}: no column of {}", t.local)),
        );
        drift
    }

    /// The drift of every synced row type, by table.
    fn row_types() -> Vec<(&'static Table, Vec<String>)> {
        use crate::audit::AuditEntry;
        use crate::leases::LeaseEventRow;
        use crate::records::{AttemptRow, CertRow, StepRow};
        use crate::{QaVerdictRow, ReworkRow};
        vec![
            (AttemptRow::TABLE, row_drift::<AttemptRow>("AttemptRow")),
            (StepRow::TABLE, row_drift::<StepRow>("StepRow")),
            (CertRow::TABLE, row_drift::<CertRow>("CertRow")),
            (QaVerdictRow::TABLE, row_drift::<QaVerdictRow>("QaVerdictRow")),
            (ReworkRow::TABLE, row_drift::<ReworkRow>("ReworkRow")),
            (LeaseEventRow::TABLE, row_drift::<LeaseEventRow>("LeaseEventRow")),
            (AuditEntry::TABLE, row_drift::<AuditEntry>("AuditEntry")),
        ]
    }

    /// Adds up every column of each synced table three ways: the freshly
    /// migrated SQLite schema, the descriptor here, and the typed row the
    /// store reads (`synced_row!`). A column added to a migration but not
    /// to the descriptor, or to the descriptor but not to the row type (nor
    /// its `omits`), fails here; the central schema is checked against the
    /// same descriptors by `the_record_descriptors_match_the_freshly_migrated_central_schema`.
    #[test]
    fn every_column_of_each_table_is_in_the_migrations_its_descriptor_and_its_row_type() {
        let d = tempfile::tempdir().unwrap();
        let s = crate::Store::open(&d.path().join("station.db")).unwrap();
        let rows = row_types();
        for t in TABLES {
            let drift = s.read(|c| Ok(local_drift(c, t))).unwrap();
            assert!(drift.is_empty(), "crates/imprint-store/src/synced.rs and migrations/sqlite differ: {drift:?}");
            let typed: Vec<_> = rows.iter().filter(|(rt, _)| rt.local == t.local).collect();
            assert_eq!(typed.len(), 1, "{}: every synced table has exactly one row type declared with synced_row!", t.local);
            assert!(typed[0].1.is_empty(), "the row type of {} and its descriptor differ: {:?}", t.local, typed[0].1);
        }
        assert_eq!(rows.len(), TABLES.len());
    }

    #[allow(dead_code)]
    mod drifted {
        synced_row! {
            /// A step row that lost `detail` and omits a column it also carries.
            pub struct PartialStep: STEPS, omits [attempt_id, at] {
                pub at: String,
                pub stage: String,
                pub kind: String,
            }
        }
    }

    /// The row check sees drift: a column neither read nor omitted, a name
    /// both read and omitted.
    #[test]
    fn a_row_type_missing_a_column_of_its_descriptor_is_found() {
        assert_eq!(
            row_drift::<drifted::PartialStep>("PartialStep"),
            [
                "steps.id is neither a field of PartialStep nor in its omits",
                "steps.at is 1 field(s) and 1 omit(s) of PartialStep",
                "steps.detail is neither a field of PartialStep nor in its omits",
            ]
        );
    }

    /// Every row type reads back what its `insert_in` wrote, and builds the
    /// same row from the raw values the sync carries (`from_values`) as from
    /// the SQLite row (`read`).
    #[test]
    fn typed_rows_read_write_and_build_from_raw_values_alike() {
        use crate::records::{AttemptEnd, CertRow, StepRow};
        use crate::{AttemptRow, QaVerdictRow, ReworkRow};
        let d = tempfile::tempdir().unwrap();
        let s = crate::Store::open(&d.path().join("station.db")).unwrap();
        let a = s.begin_attempt_by("/dev/ttyUSB0", None, Some("op-1")).unwrap();
        s.set_device(&a, &crate::DeviceFacts { serial: "SN1".into(), fw_hash: "f00d".into(), ..Default::default() }).unwrap();
        s.record_steps(&a, vec![StepRow { at: crate::now_text(), stage: "identify".into(), kind: "info".into(), detail: "d".into() }])
            .unwrap();
        let cert = crate::Intent {
            id: crate::new_id(),
            attempt_id: a.clone(),
            device_serial: "SN1".into(),
            issuer: "CN=CA".into(),
            serial_hex: "01".into(),
            spki_sha256: "k1".into(),
            spki_der: vec![1, 2, 3],
            not_before: crate::Timestamp::now(),
            not_after: crate::Timestamp::now(),
        };
        s.journal_intent(&cert).unwrap();
        s.mark_issued(&cert.id, b"cert", b"chain", "fp").unwrap();
        s.finish_attempt(&a, AttemptEnd::Passed { resumed: false }, 1, 2).unwrap();
        let v = s
            .record_qa_verdict(crate::NewQaVerdict {
                operator: None,
                port: "p".into(),
                device_serial: "SN1".into(),
                cert_serial_hex: Some("01".into()),
                certificate_id: Some(cert.id.clone()),
                batch: None,
                passed: true,
                checks_json: "[]".into(),
                failed: vec![],
            })
            .unwrap();
        let w = s.authorise_rework("SN1", Some("sup-1"), Some("bad flash"), "2099-01-01T00:00:00.000Z").unwrap();
        let wo = crate::leases::CentralWorkOrderCopy {
            id: "WO-T".into(),
            product: "p".into(),
            quantity: 5,
            free: 5,
            valid_from: None,
            valid_until: None,
            closed: false,
            created_by: None,
            closed_by: None,
            stations: None,
        };
        s.apply_central_work_orders(vec![wo]).unwrap();
        let ask = s.ask_lease("WO-T", 2).unwrap();
        s.answer_lease(&ask.id, 2, crate::Timestamp::now(), 3).unwrap();

        fn check<T: SyncedRow + PartialEq + std::fmt::Debug>(s: &crate::Store) -> Vec<T> {
            s.read(|c| {
                let mut st = c.prepare(&format!("SELECT {} FROM {} t", T::select("t"), T::TABLE.local)).unwrap();
                let rows: Vec<T> = st
                    .query_map([], |r| {
                        let typed = T::read(r)?;
                        assert_eq!(T::from_values(&read_values(r, 0, T::TABLE.width())?)?, typed, "{}", T::TABLE.local);
                        Ok(typed)
                    })?
                    .collect::<Result<_, _>>()?;
                assert!(!rows.is_empty(), "{}", T::TABLE.local);
                Ok(rows)
            })
            .unwrap()
        }
        let attempt = &check::<AttemptRow>(&s)[0];
        assert_eq!((attempt.fw_hash.as_deref(), attempt.operator.as_deref(), attempt.bytes_from_device), (Some("f00d"), Some("op-1"), 2));
        let c = &check::<CertRow>(&s)[0];
        assert_eq!((c.cert_der.as_deref(), c.chain_der.as_deref()), (Some(&b"cert"[..]), Some(&b"chain"[..])));
        assert_eq!(check::<StepRow>(&s)[0].detail, "d");
        assert_eq!(check::<QaVerdictRow>(&s), [v]);
        assert_eq!(check::<ReworkRow>(&s), [w]);
        let journal = check::<crate::leases::LeaseEventRow>(&s);
        assert_eq!((journal.len(), journal[1].granted, journal[1].expires_at.is_some()), (2, Some(2), true));
        assert_eq!(journal, s.lease_journal(None).unwrap());
        let mut trail = check::<crate::audit::AuditEntry>(&s);
        trail.sort_by_key(|e| e.seq);
        assert_eq!(trail, s.audit_entries(&Default::default()).unwrap());
        assert!(crate::audit::verify(&trail, &s.audit_snapshot().unwrap().1, None).ok(), "entries written by insert_in verify");
    }

    #[test]
    fn columns_added_later_are_nullable() {
        for t in TABLES {
            assert!(t.columns.iter().all(|c| !c.added || c.nullable), "{}", t.local);
        }
    }

    #[test]
    fn every_key_is_a_uuid_with_at_most_a_number() {
        for t in TABLES {
            let k: Vec<usize> = t.key_positions().collect();
            assert!(matches!(k.len(), 1 | 2), "{}", t.local);
            assert_eq!(t.columns[k[0]].kind, Kind::Uuid, "{}", t.local);
            if let Some(&i) = k.get(1) {
                assert_eq!(t.columns[i].kind, Kind::Int, "{}", t.local);
            }
            assert!(k.iter().all(|&i| !t.columns[i].nullable), "{}", t.local);
            assert_eq!(table(t.entity).local, t.local);
        }
    }
}
