//! Operators: who may sign in, with which role. The store keeps only
//! derived secrets (an Argon2id PHC string for the PIN, a SHA-256 for the
//! badge code); hashing, roles and the permission matrix live in
//! `imprint-api` (`auth.rs`, `roles.rs`). Failed PIN counts and lockouts
//! are kept here so they survive a restart.

use crate::{now_text, Store, StoreError};
use rusqlite::{params, OptionalExtension, Row};

/// One operator as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorRow {
    pub id: String,
    pub display_name: String,
    /// `technician`, `qa`, `supervisor` or `admin` (parsed by imprint-api).
    pub role: String,
    /// Argon2id PHC string.
    pub pin_hash: String,
    /// Hex SHA-256 of the badge code.
    pub badge_sha256: Option<String>,
    pub enabled: bool,
    pub failed_pins: u32,
    /// Sign-in refused until then (stored time).
    pub locked_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLS: &str = "id, display_name, role, pin_hash, badge_sha256, enabled, failed_pins, locked_until, created_at, updated_at";

fn row(r: &Row<'_>) -> rusqlite::Result<OperatorRow> {
    Ok(OperatorRow {
        id: r.get(0)?,
        display_name: r.get(1)?,
        role: r.get(2)?,
        pin_hash: r.get(3)?,
        badge_sha256: r.get(4)?,
        enabled: r.get::<_, i64>(5)? != 0,
        failed_pins: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
        locked_until: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

/// A change to one operator (what `imprint operators ...` and the app's
/// Operators view do).
#[derive(Clone, Debug)]
pub enum OperatorChange {
    Enabled(bool),
    Role(String),
    /// A new PIN hash: also clears failed tries and a lockout.
    Pin(String),
    Badge(Option<String>),
    DisplayName(String),
}

/// What a wrong PIN did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedPin {
    pub failed_pins: u32,
    /// Set when this failure locked the operator.
    pub locked_until: Option<String>,
}

impl Store {
    /// Every operator, by id.
    pub fn operators(&self) -> Result<Vec<OperatorRow>, StoreError> {
        self.read(|c| {
            let mut q = c.prepare(&format!("SELECT {COLS} FROM operators ORDER BY id"))?;
            let rows = q.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn operator_count(&self) -> Result<u64, StoreError> {
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM operators", [], |r| r.get::<_, i64>(0))?.max(0) as u64))
    }

    pub fn operator(&self, id: &str) -> Result<Option<OperatorRow>, StoreError> {
        let id = id.to_string();
        self.read(move |c| Ok(c.query_row(&format!("SELECT {COLS} FROM operators WHERE id = ?1"), [id], row).optional()?))
    }

    pub fn operator_by_badge(&self, badge_sha256: &str) -> Result<Option<OperatorRow>, StoreError> {
        let b = badge_sha256.to_string();
        self.read(move |c| Ok(c.query_row(&format!("SELECT {COLS} FROM operators WHERE badge_sha256 = ?1"), [b], row).optional()?))
    }

    /// Add an operator. `Duplicate` when the id or the badge is taken.
    pub fn add_operator(&self, op: &OperatorRow) -> Result<(), StoreError> {
        self.add_operator_if(op, false)
    }

    /// Add the first operator: `Duplicate` when any operator exists already
    /// (checked in the same transaction, so two first-run screens cannot
    /// both create one).
    pub fn add_first_operator(&self, op: &OperatorRow) -> Result<(), StoreError> {
        self.add_operator_if(op, true)
    }

    fn add_operator_if(&self, op: &OperatorRow, only_first: bool) -> Result<(), StoreError> {
        let op = op.clone();
        self.write(move |t| {
            if only_first {
                let n: i64 = t.query_row("SELECT count(*) FROM operators", [], |r| r.get(0))?;
                if n > 0 {
                    return Err(StoreError::Duplicate("an operator exists already: the first admin is set up".into()));
                }
            }
            let taken = |what: &str| StoreError::Duplicate(what.to_string());
            if t.query_row("SELECT 1 FROM operators WHERE id = ?1", [&op.id], |_| Ok(())).optional()?.is_some() {
                return Err(taken(&format!("operator {} exists already", op.id)));
            }
            if let Some(b) = &op.badge_sha256 {
                if t.query_row("SELECT 1 FROM operators WHERE badge_sha256 = ?1", [b], |_| Ok(())).optional()?.is_some() {
                    return Err(taken("that badge belongs to another operator"));
                }
            }
            let now = now_text();
            t.execute(
                &format!("INSERT INTO operators({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7, ?7)"),
                params![op.id, op.display_name, op.role, op.pin_hash, op.badge_sha256, op.enabled as i64, now],
            )?;
            Ok(())
        })
    }

    /// Apply `change` to operator `id`; `NotFound` when there is none.
    pub fn change_operator(&self, id: &str, change: OperatorChange) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |t| {
            let now = now_text();
            let n = match &change {
                OperatorChange::Enabled(e) => {
                    t.execute("UPDATE operators SET enabled = ?2, updated_at = ?3 WHERE id = ?1", params![id, *e as i64, now])?
                }
                OperatorChange::Role(r) => {
                    t.execute("UPDATE operators SET role = ?2, updated_at = ?3 WHERE id = ?1", params![id, r, now])?
                }
                OperatorChange::Pin(h) => t.execute(
                    "UPDATE operators SET pin_hash = ?2, failed_pins = 0, locked_until = NULL, updated_at = ?3 WHERE id = ?1",
                    params![id, h, now],
                )?,
                OperatorChange::Badge(b) => {
                    if let Some(b) = b {
                        let other: Option<String> =
                            t.query_row("SELECT id FROM operators WHERE badge_sha256 = ?1", [b], |r| r.get(0)).optional()?;
                        if other.is_some_and(|o| o != id) {
                            return Err(StoreError::Duplicate("that badge belongs to another operator".into()));
                        }
                    }
                    t.execute("UPDATE operators SET badge_sha256 = ?2, updated_at = ?3 WHERE id = ?1", params![id, b, now])?
                }
                OperatorChange::DisplayName(d) => {
                    t.execute("UPDATE operators SET display_name = ?2, updated_at = ?3 WHERE id = ?1", params![id, d, now])?
                }
            };
            if n == 0 {
                return Err(StoreError::NotFound(format!("operator {id}")));
            }
            Ok(())
        })
    }

    /// Count a wrong PIN for `id`; the `lock_after`th in a row locks the
    /// operator until `lock_until`.
    pub fn record_failed_pin(&self, id: &str, lock_after: u32, lock_until: &str) -> Result<FailedPin, StoreError> {
        let (id, until) = (id.to_string(), lock_until.to_string());
        let out = std::sync::Arc::new(std::sync::Mutex::new(None));
        let o = out.clone();
        self.write(move |t| {
            let failed: i64 =
                t.query_row("UPDATE operators SET failed_pins = failed_pins + 1 WHERE id = ?1 RETURNING failed_pins", [&id], |r| r.get(0))?;
            let failed = failed.clamp(0, i64::from(u32::MAX)) as u32;
            let locked = if failed >= lock_after.max(1) {
                t.execute("UPDATE operators SET locked_until = ?2, failed_pins = 0 WHERE id = ?1", params![id, until])?;
                Some(until)
            } else {
                None
            };
            if let Ok(mut g) = o.lock() {
                *g = Some(FailedPin { failed_pins: failed, locked_until: locked });
            }
            Ok(())
        })?;
        let r = out.lock().ok().and_then(|mut g| g.take());
        r.ok_or(StoreError::WriterGone)
    }

    /// A successful sign-in clears the count of wrong PINs and an expired lockout.
    pub fn record_sign_in(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |t| {
            t.execute("UPDATE operators SET failed_pins = 0, locked_until = NULL WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

/// An operator as the center keeps it (`central_operators`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralOperator {
    pub id: String,
    pub display_name: String,
    pub role: String,
    pub pin_hash: String,
    pub badge_sha256: Option<String>,
    pub enabled: bool,
}

/// What copying the center's operators changed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CentralApplied {
    pub added: usize,
    pub updated: usize,
    /// Copied from the center earlier, gone there now: disabled here.
    pub disabled: usize,
}

impl Store {
    /// Make the local operators match the center's copy: every central
    /// operator is added or overwritten here (the center wins, also over a
    /// local operator of the same id; a new PIN clears failed tries and a
    /// lockout), and one copied earlier that the center no longer has is
    /// disabled. Operators managed only on this station stay as they are;
    /// a badge already held by a local operator is not copied (logged).
    pub fn apply_central_operators(&self, rows: Vec<CentralOperator>) -> Result<CentralApplied, StoreError> {
        let out = std::sync::Arc::new(std::sync::Mutex::new(CentralApplied::default()));
        let o = out.clone();
        self.write(move |t| {
            let mut applied = CentralApplied::default();
            let now = now_text();
            for r in &rows {
                let badge = match &r.badge_sha256 {
                    Some(b) => {
                        let holder: Option<String> =
                            t.query_row("SELECT id FROM operators WHERE badge_sha256 = ?1", [b], |x| x.get(0)).optional()?;
                        if holder.as_ref().is_some_and(|h| h != &r.id) {
                            tracing::warn!(operator = %r.id, holder = ?holder, "a central operator's badge is held by a local operator here: not copied");
                            None
                        } else {
                            Some(b.clone())
                        }
                    }
                    None => None,
                };
                let old: Option<(String, String, String, Option<String>, i64, String)> = t
                    .query_row(
                        "SELECT display_name, role, pin_hash, badge_sha256, enabled, source FROM operators WHERE id = ?1",
                        [&r.id],
                        |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?, x.get(5)?)),
                    )
                    .optional()?;
                match old {
                    None => {
                        t.execute(
                            "INSERT INTO operators(id, display_name, role, pin_hash, badge_sha256, enabled, failed_pins, locked_until, created_at, updated_at, source)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7, ?7, 'central')",
                            params![r.id, r.display_name, r.role, r.pin_hash, badge, r.enabled as i64, now],
                        )?;
                        applied.added += 1;
                    }
                    Some(old) => {
                        let new = (r.display_name.clone(), r.role.clone(), r.pin_hash.clone(), badge.clone(), r.enabled as i64, "central".to_string());
                        if old != new {
                            let pin_changed = old.2 != r.pin_hash;
                            t.execute(
                                "UPDATE operators SET display_name = ?2, role = ?3, pin_hash = ?4, badge_sha256 = ?5, enabled = ?6, source = 'central',
                                 updated_at = ?7 WHERE id = ?1",
                                params![r.id, r.display_name, r.role, r.pin_hash, badge, r.enabled as i64, now],
                            )?;
                            if pin_changed {
                                t.execute("UPDATE operators SET failed_pins = 0, locked_until = NULL WHERE id = ?1", [&r.id])?;
                            }
                            applied.updated += 1;
                        }
                    }
                }
            }
            let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
            let copied: Vec<String> = t
                .prepare("SELECT id FROM operators WHERE source = 'central' AND enabled = 1")?
                .query_map([], |x| x.get(0))?
                .collect::<Result<_, _>>()?;
            for id in copied.iter().filter(|id| !ids.contains(id.as_str())) {
                t.execute("UPDATE operators SET enabled = 0, updated_at = ?2 WHERE id = ?1", params![id, now])?;
                applied.disabled += 1;
            }
            if let Ok(mut g) = o.lock() {
                *g = applied;
            }
            Ok(())
        })?;
        let r = out.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str, badge: Option<&str>) -> OperatorRow {
        OperatorRow {
            id: id.into(),
            display_name: format!("Op {id}"),
            role: "technician".into(),
            pin_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            badge_sha256: badge.map(str::to_string),
            enabled: true,
            failed_pins: 0,
            locked_until: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn operators_add_change_lock_and_clear() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        s.add_first_operator(&op("admin", None)).unwrap();
        assert!(matches!(s.add_first_operator(&op("second", None)), Err(StoreError::Duplicate(_))));
        s.add_operator(&op("t1", Some("b1"))).unwrap();
        assert!(matches!(s.add_operator(&op("t1", None)), Err(StoreError::Duplicate(_))));
        assert!(matches!(s.add_operator(&op("t2", Some("b1"))), Err(StoreError::Duplicate(_))));
        assert_eq!(s.operator_by_badge("b1").unwrap().unwrap().id, "t1");
        assert_eq!(s.operator_count().unwrap(), 2);
        for i in 1..5 {
            let f = s.record_failed_pin("t1", 5, "2099-01-01T00:00:00.000Z").unwrap();
            assert_eq!(f, FailedPin { failed_pins: i, locked_until: None });
        }
        let f = s.record_failed_pin("t1", 5, "2099-01-01T00:00:00.000Z").unwrap();
        assert_eq!(f.locked_until.as_deref(), Some("2099-01-01T00:00:00.000Z"));
        assert_eq!(s.operator("t1").unwrap().unwrap().locked_until.as_deref(), Some("2099-01-01T00:00:00.000Z"));
        s.change_operator("t1", OperatorChange::Pin("new".into())).unwrap();
        let t1 = s.operator("t1").unwrap().unwrap();
        assert_eq!((t1.pin_hash.as_str(), t1.failed_pins, t1.locked_until), ("new", 0, None));
        s.change_operator("t1", OperatorChange::Enabled(false)).unwrap();
        assert!(!s.operator("t1").unwrap().unwrap().enabled);
        assert!(matches!(s.change_operator("nobody", OperatorChange::Enabled(true)), Err(StoreError::NotFound(_))));
        assert!(matches!(s.change_operator("admin", OperatorChange::Badge(Some("b1".into()))), Err(StoreError::Duplicate(_))));
    }
}
