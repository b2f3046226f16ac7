//! Content hashes of records as the station holds them. The center stores
//! the hash the station computed; a record that arrives again is compared by
//! (version, hash). Every field is length-prefixed and tagged, so no two
//! different contents encode alike. The version is not hashed.
//!
//! Moved here from `imprint-sync` so the store can anchor record hashes in
//! the audit trail (`audit.rs`); `imprint_sync::hash` re-exports this module
//! and `crates/imprint-sync/tests/hash_pinned.rs` pins the bytes.

use crate::synced::{Kind, Table, Value};
use sha2::{Digest, Sha256};

/// The tagged, length-prefixed encoder shared by record hashes and audit
/// entry hashes (docs/audit.md).
pub(crate) struct H(pub(crate) Sha256);

impl H {
    pub(crate) fn new(kind: &str, station: &str) -> H {
        let mut h = H(Sha256::new());
        h.text(kind);
        h.text(station);
        h
    }
    pub(crate) fn raw(&mut self, tag: u8, b: &[u8]) {
        self.0.update([tag]);
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    pub(crate) fn text(&mut self, s: &str) {
        self.raw(1, s.as_bytes());
    }
    /// A time as the instant it names, at PostgreSQL's precision (µs), so
    /// the hash does not depend on how the text spells it.
    pub(crate) fn time(&mut self, s: &str) {
        match crate::parse_ts(s) {
            Some(t) => self.instant(t),
            None => self.text(s),
        }
    }
    /// A parsed time (tag 4, µs since the epoch).
    fn instant(&mut self, t: time::OffsetDateTime) {
        self.raw(4, &(t.unix_timestamp_nanos().div_euclid(1000)).to_be_bytes());
    }
    pub(crate) fn int(&mut self, v: i64) {
        self.raw(2, &v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.raw(3, b);
    }
    /// NULL: one 0 byte.
    pub(crate) fn null(&mut self) {
        self.0.update([0]);
    }
    pub(crate) fn done(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Hash of a record of `table` as synced by `station`: the kind's name, the
/// station, then every column in the table's order, encoded by its kind.
/// Byte for byte what the per-table functions computed before the
/// descriptor (pinned by `tests/hash_pinned.rs`): text (and UUIDs, as text)
/// tag 1, integers tag 2, bytes tag 3, times tag 4 as microseconds since the
/// epoch (a time that does not parse is hashed as its text), NULL one 0
/// byte, except a NULL boolean, which is the integer -1, and a NULL in a
/// column appended later (`Column::added`), which adds nothing.
pub fn record(table: &Table, station: &str, values: &[Value]) -> [u8; 32] {
    record_with_times(table, station, values, |_, s| crate::parse_ts(s))
}

/// [`record`] with the times already parsed: `parsed(i, text)` gives column
/// `i`'s instant (`None`: the text is not a time, hashed as its text). The
/// sync parses each time once for the hash and for the cell it sends
/// (issue 18); the bytes are the same as [`record`]'s.
pub fn record_with_times(
    table: &Table,
    station: &str,
    values: &[Value],
    mut parsed: impl FnMut(usize, &str) -> Option<time::OffsetDateTime>,
) -> [u8; 32] {
    let mut h = H::new(table.entity.as_str(), station);
    for (i, c) in table.columns.iter().enumerate() {
        let v = values.get(i).unwrap_or(&Value::Null);
        match (c.kind, v) {
            // A column appended later adds nothing while NULL: records
            // synced before it keep their hash.
            (_, Value::Null) if c.added => {}
            (Kind::Bool, Value::Null) => h.int(-1),
            (Kind::Bool, Value::Int(b)) => h.int(i64::from(*b != 0)),
            (_, Value::Null) => h.null(),
            (Kind::Text | Kind::Uuid, Value::Text(s)) => h.text(s),
            (Kind::Time, Value::Text(s)) => match parsed(i, s) {
                Some(t) => h.instant(t),
                None => h.text(s),
            },
            (Kind::Int, Value::Int(n)) => h.int(*n),
            (Kind::Bytes, Value::Blob(b)) => h.bytes(b),
            // A value of the wrong kind is quarantined as malformed before
            // sending; it still gets a hash (tag 9: never equal to a valid one).
            (_, Value::Int(n)) => h.raw(9, &n.to_be_bytes()),
            (_, Value::Text(s)) => h.raw(9, s.as_bytes()),
            (_, Value::Blob(b)) => h.raw(9, b),
        }
    }
    h.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synced::STEPS;

    fn s(detail: &str, stage: &str) -> Vec<Value> {
        ["a", "1", "t", stage, "k", detail]
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 1 { Value::Int(1) } else { Value::Text(v.to_string()) })
            .collect()
    }
    fn step(station: &str, v: &[Value]) -> [u8; 32] {
        record(&STEPS, station, v)
    }

    #[test]
    fn field_boundaries_and_station_change_the_hash() {
        assert_ne!(step("S", &s("ab", "c")), step("S", &s("a", "bc")));
        assert_ne!(step("S", &s("a", "b")), step("T", &s("a", "b")));
        assert_eq!(step("S", &s("a", "b")), step("S", &s("a", "b")));
    }

    #[test]
    fn times_hash_as_instants_not_as_spellings() {
        let at = |t: &str| {
            let mut v = s("a", "b");
            v[2] = Value::Text(t.into());
            v
        };
        assert_eq!(step("S", &at("2036-01-01T00:00:00Z")), step("S", &at("2036-01-01T00:00:00.000Z")));
        assert_ne!(step("S", &at("2036-01-01T00:00:00Z")), step("S", &at("2036-01-01T00:00:00.001Z")));
    }

    /// Adding a column must not change the hash of records already at the
    /// center (they would be quarantined when an acknowledgement was lost).
    #[test]
    fn a_column_appended_later_keeps_the_hash_of_records_without_it() {
        use crate::synced::{Change, Column};
        let mut cols: Vec<Column> = STEPS.columns.to_vec();
        cols.push(Column { name: "operator", local: "operator", kind: Kind::Text, nullable: true, change: Change::Fixed, added: true });
        let wider = Table { columns: Box::leak(cols.into_boxed_slice()), ..STEPS };
        let mut v = s("a", "b");
        v.push(Value::Null);
        assert_eq!(record(&wider, "S", &v), step("S", &s("a", "b")));
        v[6] = Value::Text("op-1".into());
        assert_ne!(record(&wider, "S", &v), step("S", &s("a", "b")));
        v[6] = Value::Text(String::new());
        assert_ne!(record(&wider, "S", &v), step("S", &s("a", "b")), "empty text is not NULL");
    }

    /// The sync hashes with its own parsed times (issue 18): the bytes must be
    /// `record`'s, for times spelled any way and for text that is no time.
    #[test]
    fn hashing_with_times_parsed_beforehand_gives_the_same_bytes() {
        for t in ["2036-01-01T00:00:00Z", "2036-01-01T01:30:00.123456+01:30", "1970-01-01T00:00:00.000Z", "yesterday", ""] {
            let mut v = s("a", "b");
            v[2] = Value::Text(t.into());
            let parsed = record_with_times(&STEPS, "S", &v, |i, text| {
                assert_eq!(i, 2, "only the time column is asked for");
                crate::parse_ts(text)
            });
            assert_eq!(parsed, step("S", &v), "{t:?}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_kind_never_hashes_like_a_valid_one() {
        let mut v = s("a", "b");
        v[1] = Value::Text("1".into());
        assert_ne!(step("S", &v), step("S", &s("a", "b")));
    }
}
