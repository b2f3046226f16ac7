//! Typed columns of the store's rows: times, statuses, stages and failure
//! codes. Each is stored as the same text as before, so databases written
//! by earlier builds read back unchanged; text a build does not know is kept
//! as [`Recorded::Unrecognized`], never turned into a value.

use imprint_proto::Closed;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant as the store holds it: RFC 3339 UTC text with exactly three
/// fractional digits (see [`crate::ts`]), read back from any RFC 3339 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(OffsetDateTime::now_utc())
    }
    /// Parse RFC 3339 text.
    pub fn parse(s: &str) -> Option<Timestamp> {
        OffsetDateTime::parse(s, &Rfc3339).ok().map(Timestamp)
    }
    pub fn get(self) -> OffsetDateTime {
        self.0
    }
    /// The stored text.
    pub fn text(self) -> String {
        crate::ts(self.0)
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Timestamp {
        Timestamp(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.text())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.text()))
    }
}

impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        Timestamp::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("{:?} is not an RFC 3339 time", imprint_proto::codes::cut(s, 64)).into()))
    }
}

/// A time column as read back: the instant, or, when the text is no RFC
/// 3339 time (edited by hand), that text as found. One such row never hides
/// the others from a list or an export, and the text is never guessed into
/// an instant; code that needs the instant asks [`StoredTime::get`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoredTime {
    At(Timestamp),
    Unrecognized(String),
}

impl StoredTime {
    /// The instant, when the stored text is one.
    pub fn get(&self) -> Option<Timestamp> {
        match self {
            StoredTime::At(t) => Some(*t),
            StoredTime::Unrecognized(_) => None,
        }
    }
}

impl From<Timestamp> for StoredTime {
    fn from(t: Timestamp) -> StoredTime {
        StoredTime::At(t)
    }
}

impl fmt::Display for StoredTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredTime::At(t) => t.fmt(f),
            StoredTime::Unrecognized(s) => f.pad(s),
        }
    }
}

impl Serialize for StoredTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Written back as the text it stands for (an instant as the store writes
/// times, unrecognized text verbatim).
impl ToSql for StoredTime {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            StoredTime::At(t) => t.to_sql(),
            StoredTime::Unrecognized(s) => Ok(ToSqlOutput::from(s.as_str())),
        }
    }
}

impl FromSql for StoredTime {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        Ok(Timestamp::parse(s).map(StoredTime::At).unwrap_or_else(|| StoredTime::Unrecognized(s.to_string())))
    }
}

/// A column holding a value of a closed set ([`Closed`]): the value, or
/// the text as found when this build does not know it (a database written
/// by a newer build, or edited by hand). Unknown text is kept verbatim so
/// the record syncs and hashes as it is stored, and is never made a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Recorded<T> {
    Known(T),
    Unrecognized(String),
}

impl<T: Closed> Recorded<T> {
    pub fn from_text(s: String) -> Recorded<T> {
        match T::parse(&s) {
            Some(v) => Recorded::Known(v),
            None => Recorded::Unrecognized(s),
        }
    }
    /// The text as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Recorded::Known(v) => v.as_str(),
            Recorded::Unrecognized(s) => s,
        }
    }
    /// The value, when this build knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Recorded::Known(v) => Some(*v),
            Recorded::Unrecognized(_) => None,
        }
    }
}

impl CertStatus {
    /// `signing` or `issued`: the one certificate a key may have at a time.
    pub fn is_current(self) -> bool {
        matches!(self, CertStatus::Signing | CertStatus::Issued)
    }
}

impl<T: Closed> From<T> for Recorded<T> {
    fn from(v: T) -> Recorded<T> {
        Recorded::Known(v)
    }
}

impl<T: Closed + PartialEq> PartialEq<T> for Recorded<T> {
    fn eq(&self, other: &T) -> bool {
        self.known().is_some_and(|v| v == *other)
    }
}

impl<T: Closed> fmt::Display for Recorded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl<T: Closed> Serialize for Recorded<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<T: Closed> FromSql for Recorded<T> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Recorded::from_text(v.as_str()?.to_string()))
    }
}

impl<T: Closed> ToSql for Recorded<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

macro_rules! closed_text {
    ($(#[$m:meta])* $name:ident { $( $(#[$vm:meta])* $v:ident = $t:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ts_rs::TS)]
        #[ts(export, export_to = "../../../ui/src/bindings/")]
        pub enum $name { $( $(#[$vm])* #[ts(rename = $t)] $v, )* }
        impl Closed for $name {
            const ALL: &'static [$name] = &[ $( $name::$v, )* ];
            fn as_str(self) -> &'static str {
                match self { $( $name::$v => $t, )* }
            }
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                <$name as Closed>::as_str(self)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

closed_text! {
    /// Where an attempt is.
    AttemptStatus {
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        /// The station stopped while it ran (found at start-up).
        Interrupted = "interrupted",
    }
}

closed_text! {
    /// Where a certificate is (invariant 3: `signing` is journaled before the
    /// signer is called). `signing` and `issued` are *current*: at most one
    /// per key (invariant 4); a renewal or rework makes the old one
    /// `superseded` (or `revoked` with reason superseded).
    CertStatus {
        Signing = "signing",
        Issued = "issued",
        /// Replaced by a renewal (a new certificate for the same key): not
        /// current, not revoked (it stays valid until it expires).
        Superseded = "superseded",
        Revoked = "revoked",
    }
}

closed_text! {
    /// What an audit trail entry records (`crate::audit`). Stored as this
    /// text; text a build does not know reads back as
    /// `Recorded::Unrecognized` and stays visible.
    AuditKind {
        SignIn = "sign_in",
        SignOut = "sign_out",
        SignInFailed = "sign_in_failed",
        OperatorLocked = "operator_locked",
        SettingsChanged = "settings_changed",
        CaInitialized = "ca_initialized",
        CaImported = "ca_imported",
        SignerChanged = "signer_changed",
        /// An attempt reached passed, failed or interrupted (appended in the
        /// same transaction, anchoring the attempt and its certificate).
        ProvisioningOutcome = "provisioning_outcome",
        Export = "export",
        Revocation = "revocation",
        QaVerdict = "qa_verdict",
        QuarantineReleased = "quarantine_released",
        OperatorChanged = "operator_changed",
        StoreRestored = "store_restored",
        /// A supervisor authorised re-provisioning a device serial.
        ReworkAuthorised = "rework_authorised",
        /// A renewal replaced a certificate (not revoked: the profile keeps it valid).
        CertificateSuperseded = "certificate_superseded",
        /// A work order was created or closed (docs/work-orders.md).
        WorkOrderChanged = "work_order_changed",
        /// More certificates were found for a work order than its quantity.
        Overproduction = "overproduction",
        /// A lease of a central work order's quantity was granted to this
        /// station or settled (used, returned) with the center.
        WorkOrderLease = "work_order_lease",
    }
}

closed_text! {
    /// Where a work order is: open (issues while it has quantity left and
    /// is inside its dates) or closed (final).
    WorkOrderStatus {
        Open = "open",
        Closed = "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imprint_proto::{FailureCode, Stage};

    #[test]
    fn unknown_text_from_an_old_or_newer_database_is_kept_not_made_a_value() {
        let c: Recorded<FailureCode> = Recorded::from_text("connect_dns".into());
        assert_eq!(c, Recorded::Unrecognized("connect_dns".into()));
        assert_eq!((c.as_str(), c.known()), ("connect_dns", None));
        assert_eq!(Recorded::<FailureCode>::from_text("store_full".into()), FailureCode::StoreFull);
        assert_eq!(Recorded::<AttemptStatus>::from_text("paused".into()).known(), None);
        assert_eq!(Recorded::<Stage>::from_text("write_cert".into()), Stage::WriteCert);
        assert_eq!(Recorded::<CertStatus>::from_text("issued".into()), CertStatus::Issued);
    }

    /// The TypeScript union ts-rs writes (ui/src/bindings) is exactly the
    /// stored texts, which are also what serde sends.
    fn ts_union_is_the_closed_text<T: Closed + ts_rs::TS + Serialize>() {
        let cfg = ts_rs::Config::default();
        let mut union: Vec<String> = T::inline(&cfg).split('|').map(|v| v.trim().trim_matches('"').to_string()).collect();
        let mut texts: Vec<String> = T::ALL.iter().map(|v| v.as_str().to_string()).collect();
        union.sort_unstable();
        texts.sort_unstable();
        assert_eq!(union, texts, "{}", T::name(&cfg));
        for v in T::ALL {
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{}\"", v.as_str()));
        }
    }

    #[test]
    fn the_typescript_bindings_of_statuses_are_their_stored_texts() {
        ts_union_is_the_closed_text::<AttemptStatus>();
        ts_union_is_the_closed_text::<CertStatus>();
    }

    #[test]
    fn timestamps_read_any_rfc3339_and_write_the_stored_form() {
        let t = Timestamp::parse("2036-01-01T00:00:00Z").unwrap();
        assert_eq!(t.text(), "2036-01-01T00:00:00.000Z");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2036-01-01T00:00:00.000Z\"");
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
