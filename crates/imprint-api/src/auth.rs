//! Operators and sign-in. An [`Actor`] is the proof that someone signed in:
//! its fields are private and it is made only here (a PIN or badge checked
//! against the store, the development CA's demo admin, or the headless
//! station's configured service operator), so a privileged API function
//! that takes `&Actor` cannot be called by a shell that skipped sign-in.
//! Each such function asks [`Actor::require`], which reads the one matrix
//! in [`crate::roles`].
//!
//! PINs are kept only as Argon2id PHC strings (parameters in [`params`],
//! recorded in docs/roles.md); badge codes only as their SHA-256. A PIN is
//! an [`OperatorPin`]: zeroized on drop, `***` when printed.

use crate::audit::{record, AuditKind};
use crate::roles::{self, Permission, Role};
use crate::{ApiError, ApiResult, ErrorCode};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use imprint_station::config::OperatorsConfig;
use imprint_store::operators::{OperatorChange, OperatorRow};
use imprint_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use ts_rs::TS;
use zeroize::Zeroizing;

/// The id the development CA's automatic admin is recorded under.
pub const DEMO_ADMIN: &str = "demo-admin";

/// Argon2id parameters for operator PINs: OWASP's recommended minimum
/// (19 MiB, 2 passes, 1 lane), about 20 ms per check on the station's CPU.
pub fn params() -> Params {
    // Constant, valid parameters: `Params::new` cannot fail on them.
    Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default()
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// An operator's PIN: zeroized on drop, never printed.
#[derive(Clone)]
pub struct OperatorPin(Zeroizing<String>);

impl<'de> Deserialize<'de> for OperatorPin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(OperatorPin::new)
    }
}

impl OperatorPin {
    pub fn new(pin: impl Into<String>) -> OperatorPin {
        OperatorPin(Zeroizing::new(pin.into()))
    }
    fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for OperatorPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The PIN rules: 4 to 64 characters, not all the same character.
pub(crate) fn check_pin_rules(pin: &OperatorPin) -> ApiResult<()> {
    let p = pin.expose();
    let n = p.chars().count();
    if !(4..=64).contains(&n) {
        return Err(ApiError::bad_request("a PIN has 4 to 64 characters"));
    }
    if p.chars().all(|c| p.starts_with(c)) {
        return Err(ApiError::bad_request("a PIN of one repeated character is refused: choose another"));
    }
    if p.chars().any(char::is_control) {
        return Err(ApiError::bad_request("a PIN has no control characters"));
    }
    Ok(())
}

/// Hash a PIN for the store (Argon2id, random salt, PHC string).
pub fn hash_pin(pin: &OperatorPin) -> ApiResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(pin.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("could not hash the PIN: {e}")))
}

fn pin_matches(pin: &OperatorPin, phc: &str) -> bool {
    // Verified with the parameters recorded in the PHC string itself.
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(pin.expose().as_bytes(), &h).is_ok())
}

/// The badge code as stored: hex SHA-256 of the code without surrounding blanks.
pub fn badge_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

/// How an operator signs in.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum Credentials {
    /// Operator id and PIN, typed.
    Pin {
        id: String,
        #[ts(type = "string")]
        pin: OperatorPin,
    },
    /// What a badge scanner types.
    Badge { code: String },
}

/// How an actor came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum ActorKind {
    /// Signed in with a PIN or a badge.
    Operator,
    /// The development CA's automatic admin (never with a production CA).
    Demo,
    /// The headless station's configured service operator (technician rights).
    Service,
    /// Created the first admin on a station that had no operator.
    Bootstrap,
}

/// Someone signed in. Made only by this module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    id: String,
    name: String,
    role: Role,
    kind: ActorKind,
}

impl Actor {
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn kind(&self) -> ActorKind {
        self.kind
    }

    /// Ok when this actor's role holds `p`; `forbidden` (naming the role
    /// needed) otherwise.
    pub fn require(&self, p: Permission) -> ApiResult<()> {
        if roles::allows(self.role, p) {
            return Ok(());
        }
        let need = roles::needed(p).map(|r| r.as_str()).unwrap_or("admin");
        Err(ApiError::new(ErrorCode::Forbidden, format!("{} ({}) may not {}: this needs the {need} role", self.id, self.role, what(p))))
    }

    /// The demo admin: only with the development CA and `demo_admin` on.
    pub(crate) fn demo(development: bool, cfg: &OperatorsConfig) -> Option<Actor> {
        (development && cfg.demo_admin).then(|| Actor {
            id: DEMO_ADMIN.into(),
            name: "Demo admin (development CA)".into(),
            role: Role::Admin,
            kind: ActorKind::Demo,
        })
    }

    /// Test support for the crate's own unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(role: Role) -> Actor {
        Actor { id: format!("test-{role}"), name: "Test".into(), role, kind: ActorKind::Operator }
    }
}

fn what(p: Permission) -> &'static str {
    match p {
        Permission::View => "view the station",
        Permission::Provision => "provision devices",
        Permission::ScanWorkOrder => "set the work order",
        Permission::Simulate => "attach simulated devices",
        Permission::SyncNow => "start a sync",
        Permission::Verify => "verify devices or record QA verdicts",
        Permission::Report => "make reports or exports",
        Permission::Revoke => "revoke certificates and generate CRLs",
        Permission::Rework => "authorise rework of a device",
        Permission::WorkOrders => "manage work orders",
        Permission::ReleaseQuarantine => "release quarantined records",
        Permission::Settings => "change settings",
        Permission::CaSetup => "set up the CA or the signer",
        Permission::Operators => "manage operators",
        Permission::CentralAdmin => "administer the central database",
        Permission::Audit => "read the audit trail",
        Permission::Backup => "back up the store",
        Permission::Restore => "restore the store from a backup",
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn locked_until(row: &OperatorRow) -> Option<OffsetDateTime> {
    row.locked_until.as_deref().and_then(imprint_store::parse_ts).filter(|t| *t > now())
}

fn refused() -> ApiError {
    ApiError::new(ErrorCode::SignInFailed, "unknown operator or wrong PIN")
}

/// Check `creds` against the operators in `store`. A wrong PIN is counted
/// (when the store is writable); the `lockout_after`th in a row locks the
/// operator for `lockout_minutes`. The message never says whether the id
/// exists.
pub fn sign_in(store: &Store, cfg: &OperatorsConfig, creds: &Credentials) -> ApiResult<Actor> {
    let r = check_sign_in(store, cfg, creds);
    let (method, who) = match creds {
        Credentials::Pin { id, .. } => ("pin", Some(id.trim())),
        Credentials::Badge { .. } => ("badge", None),
    };
    match &r {
        Ok(a) => {
            record(store, Some(a.id()), AuditKind::SignIn, Some(a.id()), serde_json::json!({"method": method, "role": a.role().as_str()}))
        }
        Err(e) => {
            let kind = if e.code == ErrorCode::OperatorLocked { AuditKind::OperatorLocked } else { AuditKind::SignInFailed };
            record(store, None, kind, who, serde_json::json!({"method": method, "code": e.code.as_str()}))
        }
    }
    r
}

fn check_sign_in(store: &Store, cfg: &OperatorsConfig, creds: &Credentials) -> ApiResult<Actor> {
    let row = match creds {
        Credentials::Pin { id, .. } => store.operator(id.trim())?,
        Credentials::Badge { code } => {
            if code.trim().is_empty() {
                return Err(ApiError::bad_request("the badge scan was empty"));
            }
            store.operator_by_badge(&badge_hash(code))?
        }
    };
    let Some(row) = row else {
        if let Credentials::Pin { pin, .. } = creds {
            // The same work as a real check, so timing does not tell whether the id exists.
            let _ = hash_pin(pin);
        }
        return Err(match creds {
            Credentials::Badge { .. } => ApiError::new(ErrorCode::SignInFailed, "unknown badge"),
            Credentials::Pin { .. } => refused(),
        });
    };
    if !row.enabled {
        return Err(ApiError::new(ErrorCode::OperatorDisabled, format!("operator {} is disabled: ask an admin", row.id)));
    }
    if let Some(until) = locked_until(&row) {
        return Err(ApiError::new(
            ErrorCode::OperatorLocked,
            format!(
                "operator {} is locked after too many wrong PINs until {}: ask an admin to reset the PIN, or wait",
                row.id,
                imprint_store::ts(until)
            ),
        ));
    }
    if let Credentials::Pin { pin, .. } = creds {
        if !pin_matches(pin, &row.pin_hash) {
            if store.is_read_only() {
                return Err(refused());
            }
            let until = imprint_store::ts(now() + time::Duration::minutes(i64::from(cfg.lockout_minutes.max(1))));
            let f = store.record_failed_pin(&row.id, cfg.lockout_after.max(1), &until)?;
            tracing::warn!(operator = %row.id, failed = f.failed_pins, locked = f.locked_until.is_some(), "sign-in refused: wrong PIN");
            return Err(match f.locked_until {
                Some(u) => ApiError::new(
                    ErrorCode::OperatorLocked,
                    format!("operator {} is locked after {} wrong PINs until {u}", row.id, cfg.lockout_after.max(1)),
                ),
                None => refused(),
            });
        }
    }
    let role = Role::parse(&row.role).ok_or_else(|| {
        ApiError::new(ErrorCode::Forbidden, format!("operator {} has a role this station does not know: ask an admin", row.id))
    })?;
    if !store.is_read_only() && (row.failed_pins > 0 || row.locked_until.is_some()) {
        store.record_sign_in(&row.id)?;
    }
    tracing::info!(operator = %row.id, role = %role, "signed in");
    Ok(Actor { id: row.id, name: row.display_name, role, kind: ActorKind::Operator })
}

/// The headless station's service operator: an enabled operator named in
/// `[operators] service_operator`, acting with technician rights.
pub fn service(store: &Store, cfg: &OperatorsConfig) -> ApiResult<Option<Actor>> {
    let Some(id) = cfg.service_operator.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let row = store.operator(id)?.ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidSettings, format!("operators.service_operator names {id}, which is not an operator: add it first"))
    })?;
    if !row.enabled {
        return Err(ApiError::new(ErrorCode::OperatorDisabled, format!("service operator {id} is disabled")));
    }
    Ok(Some(Actor { id: row.id, name: row.display_name, role: Role::Technician, kind: ActorKind::Service }))
}

/// An operator as shown (never a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct OperatorView {
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub enabled: bool,
    pub has_badge: bool,
    /// Locked after wrong PINs until then.
    pub locked_until: Option<String>,
    pub created_at: String,
}

impl From<OperatorRow> for OperatorView {
    fn from(r: OperatorRow) -> Self {
        let locked = locked_until(&r).map(imprint_store::ts);
        OperatorView {
            role: Role::parse(&r.role).unwrap_or(Role::Technician),
            id: r.id,
            display_name: r.display_name,
            enabled: r.enabled,
            has_badge: r.badge_sha256.is_some(),
            locked_until: locked,
            created_at: r.created_at,
        }
    }
}

/// A new operator.
#[derive(Clone, Debug, Deserialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct NewOperator {
    pub id: String,
    pub display_name: String,
    pub role: Role,
    #[ts(type = "string")]
    pub pin: OperatorPin,
    pub badge: Option<String>,
}

fn check_id(id: &str) -> ApiResult<String> {
    let id = id.trim();
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        return Err(ApiError::bad_request("an operator id is 1 to 64 letters, digits, '-', '_', '.' or '@'"));
    }
    if id == DEMO_ADMIN {
        return Err(ApiError::bad_request(format!("{DEMO_ADMIN} is reserved for the development CA's demo admin")));
    }
    Ok(id.to_string())
}

pub(crate) fn row_of(n: &NewOperator) -> ApiResult<OperatorRow> {
    let id = check_id(&n.id)?;
    let name = n.display_name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("a display name has 1 to 100 characters, no control characters"));
    }
    check_pin_rules(&n.pin)?;
    let badge = match n.badge.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => {
            if b.chars().count() < 4 || b.chars().any(char::is_control) {
                return Err(ApiError::bad_request("a badge code has at least 4 characters"));
            }
            Some(badge_hash(b))
        }
        _ => None,
    };
    Ok(OperatorRow {
        id,
        display_name: name.to_string(),
        role: n.role.as_str().into(),
        pin_hash: hash_pin(&n.pin)?,
        badge_sha256: badge,
        enabled: true,
        failed_pins: 0,
        locked_until: None,
        created_at: String::new(),
        updated_at: String::new(),
    })
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Duplicate(m) => ApiError::bad_request(m),
        StoreError::NotFound(m) => ApiError::not_found(m),
        other => other.into(),
    }
}

/// Does this store have no operator yet (first start)?
pub fn needs_first_admin(store: &Store) -> ApiResult<bool> {
    Ok(store.operator_count()? == 0)
}

/// First start: create the first admin (refused once any operator exists)
/// and sign them in.
pub fn add_first_admin(store: &Store, new: &NewOperator) -> ApiResult<Actor> {
    if new.role != Role::Admin {
        return Err(ApiError::bad_request("the first operator is an admin"));
    }
    let row = row_of(new)?;
    store.add_first_operator(&row).map_err(|e| match e {
        StoreError::Duplicate(_) => ApiError::new(ErrorCode::Forbidden, "this station has operators already: an admin adds new ones"),
        other => other.into(),
    })?;
    tracing::info!(operator = %row.id, "first admin created");
    record(store, Some(&row.id), AuditKind::OperatorChanged, Some(&row.id), serde_json::json!({"change": "first-admin", "role": "admin"}));
    Ok(Actor { id: row.id, name: row.display_name, role: Role::Admin, kind: ActorKind::Bootstrap })
}

/// Every operator (admin).
pub fn list(actor: &Actor, store: &Store) -> ApiResult<Vec<OperatorView>> {
    actor.require(Permission::Operators)?;
    Ok(store.operators()?.into_iter().map(OperatorView::from).collect())
}

/// Add an operator (admin).
pub fn add(actor: &Actor, store: &Store, new: &NewOperator) -> ApiResult<OperatorView> {
    actor.require(Permission::Operators)?;
    let row = row_of(new)?;
    store.add_operator(&row).map_err(store_err)?;
    tracing::info!(by = %actor.id(), operator = %row.id, role = %row.role, "operator added");
    record(store, Some(actor.id()), AuditKind::OperatorChanged, Some(&row.id), serde_json::json!({"change": "add", "role": row.role}));
    store.operator(&row.id)?.map(OperatorView::from).ok_or_else(|| ApiError::internal("the operator just added is not in the store"))
}

/// A change an admin makes to an operator.
#[derive(Clone, Debug, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub enum OperatorEdit {
    Enable,
    Disable,
    SetRole {
        role: Role,
    },
    ResetPin {
        #[ts(type = "string")]
        pin: OperatorPin,
    },
    SetBadge {
        badge: Option<String>,
    },
}

/// Change operator `id` (admin). An admin cannot disable or demote
/// themselves (a station must keep one admin who can sign in).
pub fn edit(actor: &Actor, store: &Store, id: &str, edit: &OperatorEdit) -> ApiResult<OperatorView> {
    actor.require(Permission::Operators)?;
    let id = id.trim();
    let own = id == actor.id();
    let change = match edit {
        OperatorEdit::Enable => OperatorChange::Enabled(true),
        OperatorEdit::Disable if own => return Err(ApiError::bad_request("you cannot disable yourself: another admin can")),
        OperatorEdit::Disable => OperatorChange::Enabled(false),
        OperatorEdit::SetRole { role } if own && *role != Role::Admin => {
            return Err(ApiError::bad_request("you cannot take the admin role from yourself: another admin can"))
        }
        OperatorEdit::SetRole { role } => OperatorChange::Role(role.as_str().into()),
        OperatorEdit::ResetPin { pin } => {
            check_pin_rules(pin)?;
            OperatorChange::Pin(hash_pin(pin)?)
        }
        OperatorEdit::SetBadge { badge } => {
            OperatorChange::Badge(badge.as_deref().map(str::trim).filter(|b| !b.is_empty()).map(badge_hash))
        }
    };
    store.change_operator(id, change).map_err(store_err)?;
    tracing::info!(by = %actor.id(), operator = %id, change = edit.word(), "operator changed");
    record(store, Some(actor.id()), AuditKind::OperatorChanged, Some(id), serde_json::json!({"change": edit.word()}));
    store.operator(id)?.map(OperatorView::from).ok_or_else(|| ApiError::not_found(format!("operator {id}")))
}

impl OperatorEdit {
    /// What the change was, for logs and the audit trail (never the PIN).
    pub fn word(&self) -> String {
        match self {
            OperatorEdit::Enable => "enable".into(),
            OperatorEdit::Disable => "disable".into(),
            OperatorEdit::SetRole { role } => format!("set-role {role}"),
            OperatorEdit::ResetPin { .. } => "reset-pin".into(),
            OperatorEdit::SetBadge { badge: Some(_) } => "set-badge".into(),
            OperatorEdit::SetBadge { badge: None } => "clear-badge".into(),
        }
    }
}

/// Who runs one command of the CLI: `creds` (from `--operator` and its
/// PIN) checked against the store; without them the configured service
/// operator when `headless` (the station, watch and provision commands),
/// else the development CA's demo admin. Otherwise `unauthenticated`,
/// saying how to sign in (or, on a station with no operator yet, how to
/// create the first admin).
pub fn command_actor(cfg: &imprint_station::StationConfig, creds: Option<&Credentials>, headless: bool) -> ApiResult<Actor> {
    if let Some(c) = creds {
        return crate::with_local_store(cfg, |store| sign_in(store, &cfg.operators, c));
    }
    if headless && cfg.operators.service_operator.is_some() {
        if let Some(a) = crate::with_local_store(cfg, |store| service(store, &cfg.operators))? {
            return Ok(a);
        }
    }
    if let Some(a) = Actor::demo(cfg.is_development(), &cfg.operators) {
        return Ok(a);
    }
    let first = std::fs::metadata(cfg.store_path()).is_err() || crate::with_local_store(cfg, needs_first_admin).unwrap_or(false);
    Err(ApiError::new(
        ErrorCode::Unauthenticated,
        if first {
            "this station has no operator yet: create the first admin with `imprint operators add ID --name NAME --role admin` \
             (it asks for the PIN), then sign in with --operator ID"
                .to_string()
        } else {
            "sign in with --operator ID (the PIN is asked for on the terminal, or taken from IMPRINT_OPERATOR_PIN)".to_string()
        },
    ))
}

/// Create the first admin from the command line (no sign-in: allowed only
/// while the station has no operator).
pub fn command_first_admin(cfg: &imprint_station::StationConfig, new: &NewOperator) -> ApiResult<Actor> {
    crate::with_local_store(cfg, |store| add_first_admin(store, new))
}

/// `imprint operators ...` on this data dir's store.
pub fn command_operators<T>(cfg: &imprint_station::StationConfig, f: impl FnOnce(&Store) -> ApiResult<T>) -> ApiResult<T> {
    crate::with_local_store(cfg, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db")).unwrap();
        (d, s)
    }

    fn new(id: &str, role: Role, pin: &str, badge: Option<&str>) -> NewOperator {
        NewOperator {
            id: id.into(),
            display_name: format!("Name {id}"),
            role,
            pin: OperatorPin::new(pin),
            badge: badge.map(str::to_string),
        }
    }

    fn pin(id: &str, pin: &str) -> Credentials {
        Credentials::Pin { id: id.into(), pin: OperatorPin::new(pin) }
    }

    #[test]
    fn the_first_admin_then_operators_sign_in_by_pin_and_badge() {
        let (_d, s) = store();
        assert!(needs_first_admin(&s).unwrap());
        let admin = add_first_admin(&s, &new("ada", Role::Admin, "4711-ada", None)).unwrap();
        assert!(!needs_first_admin(&s).unwrap());
        let e = add_first_admin(&s, &new("eve", Role::Admin, "4711-eve", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        add(&admin, &s, &new("tom", Role::Technician, "2468", Some("BADGE-0042"))).unwrap();
        let cfg = OperatorsConfig::default();
        let tom = sign_in(&s, &cfg, &pin("tom", "2468")).unwrap();
        assert_eq!((tom.id(), tom.role(), tom.kind()), ("tom", Role::Technician, ActorKind::Operator));
        let tom2 = sign_in(&s, &cfg, &Credentials::Badge { code: " BADGE-0042\n".into() }).unwrap();
        assert_eq!(tom2.id(), "tom");
        assert_eq!(sign_in(&s, &cfg, &pin("tom", "1357")).unwrap_err().code, ErrorCode::SignInFailed);
        assert_eq!(sign_in(&s, &cfg, &pin("nobody", "1357")).unwrap_err().code, ErrorCode::SignInFailed);
        assert_eq!(sign_in(&s, &cfg, &Credentials::Badge { code: "other".into() }).unwrap_err().code, ErrorCode::SignInFailed);
        // The store holds neither the PIN nor the badge code.
        let row = s.operator("tom").unwrap().unwrap();
        assert!(row.pin_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", row.pin_hash);
        assert!(!row.pin_hash.contains("2468"));
        assert_eq!(row.badge_sha256.as_deref(), Some(badge_hash("BADGE-0042").as_str()));
    }

    #[test]
    fn five_wrong_pins_lock_the_operator_and_a_reset_unlocks() {
        let (_d, s) = store();
        let admin = add_first_admin(&s, &new("ada", Role::Admin, "4711-ada", None)).unwrap();
        add(&admin, &s, &new("tom", Role::Technician, "2468", None)).unwrap();
        let cfg = OperatorsConfig::default();
        for _ in 0..4 {
            assert_eq!(sign_in(&s, &cfg, &pin("tom", "0000")).unwrap_err().code, ErrorCode::SignInFailed);
        }
        assert_eq!(sign_in(&s, &cfg, &pin("tom", "0000")).unwrap_err().code, ErrorCode::OperatorLocked);
        // Locked: even the right PIN is refused now.
        assert_eq!(sign_in(&s, &cfg, &pin("tom", "2468")).unwrap_err().code, ErrorCode::OperatorLocked);
        assert!(list(&admin, &s).unwrap().iter().any(|o| o.id == "tom" && o.locked_until.is_some()));
        edit(&admin, &s, "tom", &OperatorEdit::ResetPin { pin: OperatorPin::new("9753") }).unwrap();
        assert_eq!(sign_in(&s, &cfg, &pin("tom", "9753")).unwrap().id(), "tom");
    }

    #[test]
    fn a_right_pin_clears_the_count_of_wrong_ones() {
        let (_d, s) = store();
        let admin = add_first_admin(&s, &new("ada", Role::Admin, "4711-ada", None)).unwrap();
        add(&admin, &s, &new("tom", Role::Technician, "2468", None)).unwrap();
        let cfg = OperatorsConfig::default();
        for _ in 0..3 {
            let _ = sign_in(&s, &cfg, &pin("tom", "0000"));
        }
        sign_in(&s, &cfg, &pin("tom", "2468")).unwrap();
        for _ in 0..4 {
            assert_eq!(sign_in(&s, &cfg, &pin("tom", "0000")).unwrap_err().code, ErrorCode::SignInFailed);
        }
    }

    #[test]
    fn disabled_operators_and_bad_input_are_refused() {
        let (_d, s) = store();
        let admin = add_first_admin(&s, &new("ada", Role::Admin, "4711-ada", None)).unwrap();
        add(&admin, &s, &new("tom", Role::Technician, "2468", None)).unwrap();
        edit(&admin, &s, "tom", &OperatorEdit::Disable).unwrap();
        assert_eq!(sign_in(&s, &OperatorsConfig::default(), &pin("tom", "2468")).unwrap_err().code, ErrorCode::OperatorDisabled);
        for (id, p) in [("x y", "2468"), ("", "2468"), ("ok", "12"), ("ok", "1111"), (DEMO_ADMIN, "2468")] {
            assert_eq!(add(&admin, &s, &new(id, Role::Qa, p, None)).unwrap_err().code, ErrorCode::BadRequest, "{id} {p}");
        }
        assert_eq!(edit(&admin, &s, "ada", &OperatorEdit::Disable).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(edit(&admin, &s, "ada", &OperatorEdit::SetRole { role: Role::Qa }).unwrap_err().code, ErrorCode::BadRequest);
        let tom = Actor::for_test(Role::Technician);
        assert_eq!(list(&tom, &s).unwrap_err().code, ErrorCode::Forbidden);
        let e = add(&tom, &s, &new("sam", Role::Admin, "2468", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("admin role"), "{}", e.message);
    }

    #[test]
    fn a_pin_never_prints() {
        let c = pin("tom", "2468");
        assert!(!format!("{c:?}").contains("2468"));
    }
}
