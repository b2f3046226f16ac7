//! The PKCS#11 backend (HSMs, SoftHSM) through cryptoki.
//!
//! One [`Pkcs11Signer`] owns one read-only user session: the station runs it
//! on its signer thread. Signing hashes on the host and asks the token for a
//! raw CKM_ECDSA signature (SoftHSM has no CKM_ECDSA_SHA256), then encodes it
//! as DER. When the session is lost (token re-plugged, HSM restarted) the
//! signer opens a new session, logs in again and retries once.
//!
//! PKCS#11 login state is per application and token: while any session of
//! this process is logged in to a token, another login answers
//! CKR_USER_ALREADY_LOGGED_IN, which counts as success (the PIN is then not
//! checked again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use imprint_core::signer::{ecdsa_raw_to_der, SigAlg, Signer, SignerError, SignerInfo};

use crate::pin::{resolve_pin, Pin};
use crate::sign_ahead::RawSign;
use crate::uri::Pkcs11Uri;

/// Used when the URI names no module, if it exists.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Where `module-name=<name>` is looked for (`<dir>/<name>.so`).
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/lib/softhsm",
    "/usr/local/lib/pkcs11",
    "/usr/local/lib/softhsm",
];

/// DER OID of prime256v1 / secp256r1, as CKA_EC_PARAMS holds it.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of secp384r1.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn ec_params(alg: SigAlg) -> Result<&'static [u8], SignerError> {
    match alg {
        SigAlg::EcdsaP256Sha256 => Ok(P256_PARAMS),
        SigAlg::EcdsaP384Sha384 => Ok(P384_PARAMS),
        #[allow(unreachable_patterns)]
        other => Err(SignerError::Failed(format!("{} is not supported by the PKCS#11 backend", other.name()))),
    }
}

fn alg_from_params(params: &[u8]) -> Result<SigAlg, SignerError> {
    match params {
        P256_PARAMS => Ok(SigAlg::EcdsaP256Sha256),
        P384_PARAMS => Ok(SigAlg::EcdsaP384Sha384),
        other => Err(SignerError::Failed(format!(
            "unsupported EC curve (CKA_EC_PARAMS {}): only P-256 and P-384 are supported",
            hex::encode(other)
        ))),
    }
}

/// The raw uncompressed point from CKA_EC_POINT, which tokens return either
/// DER-wrapped in an OCTET STRING (SoftHSM) or raw. The wrapper's tag is also
/// 0x04, so decide by length.
fn ec_point_raw(alg: SigAlg, v: &[u8]) -> Result<Vec<u8>, SignerError> {
    let raw_len = 1 + 2 * alg.field_len();
    let raw = if v.len() == raw_len {
        v
    } else if v.len() == raw_len + 2 && v[0] == 0x04 && usize::from(v[1]) == raw_len {
        &v[2..]
    } else {
        return Err(SignerError::Failed(format!("CKA_EC_POINT has unexpected length {} for {}", v.len(), alg.name())));
    };
    if raw[0] != 0x04 {
        return Err(SignerError::Failed("CKA_EC_POINT is not an uncompressed point".into()));
    }
    Ok(raw.to_vec())
}

/// Map a cryptoki error to the signer error the retry policy and the operator
/// can act on. cryptoki errors never contain the PIN.
fn map_err(e: CkError, what: &str) -> SignerError {
    match e {
        CkError::Pkcs11(rv, func) => {
            let ctx = format!("{what} ({func}: {rv:?})");
            match rv {
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => {
                    SignerError::PinRejected(format!("the token rejected the PIN: {ctx}"))
                }
                RvError::PinExpired => SignerError::PinRejected(format!("the PIN has expired, change it: {ctx}")),
                RvError::PinLocked => SignerError::PinLocked(format!("too many wrong PINs; the security officer must unlock it: {ctx}")),
                RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::TokenNotRecognized | RvError::SlotIdInvalid => {
                    SignerError::TokenAbsent(ctx)
                }
                RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::FunctionFailed
                | RvError::GeneralError
                | RvError::HostMemory
                | RvError::SessionCount
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::OperationActive
                | RvError::FunctionCanceled
                | RvError::Cancel => SignerError::Transient(ctx),
                _ => SignerError::Failed(ctx),
            }
        }
        CkError::LibraryLoading(err) => SignerError::Failed(format!("{what}: cannot load the PKCS#11 module: {err}")),
        other => SignerError::Failed(format!("{what}: {other}")),
    }
}

/// Errors after which a new session and login may help.
fn needs_reconnect(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// Loaded and initialized modules, one per path, with their users. A module
/// is initialized on first use and finalized (C_Finalize) when its last user
/// goes: a signer closes its session first, then releases the module, on the
/// thread that used it. So a process that closed its signers has nothing
/// left for `exit()` to tear down under a live session (SoftHSM through the
/// p11-kit proxy crashed at exit when a session was closed during its
/// destructors).
static MODULES: OnceLock<Mutex<HashMap<PathBuf, Loaded>>> = OnceLock::new();

struct Loaded {
    ctx: Pkcs11,
    users: usize,
}

/// One use of a loaded PKCS#11 module; dereferences to the cryptoki
/// context. The last use of a module to be dropped finalizes it. Sessions
/// opened through it must be closed before it is dropped.
pub struct ModuleUse {
    ctx: Pkcs11,
    path: PathBuf,
}

impl std::ops::Deref for ModuleUse {
    type Target = Pkcs11;
    fn deref(&self) -> &Pkcs11 {
        &self.ctx
    }
}

impl Drop for ModuleUse {
    fn drop(&mut self) {
        let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
        // A poisoned lock only means another thread panicked while loading.
        let mut map = modules.lock().unwrap_or_else(|p| p.into_inner());
        let last = match map.get_mut(&self.path) {
            Some(l) => {
                l.users = l.users.saturating_sub(1);
                l.users == 0
            }
            None => false,
        };
        if last {
            if let Some(l) = map.remove(&self.path) {
                match l.ctx.finalize() {
                    Ok(()) => tracing::info!(module = %self.path.display(), "PKCS#11 module finalized"),
                    Err(e) => tracing::warn!(module = %self.path.display(), error = %e, "PKCS#11 module finalize failed"),
                }
            }
        }
    }
}

/// Load and initialize the module at `path` (once per process while it is
/// in use) and count one more user of it.
pub fn use_module(path: &Path) -> Result<ModuleUse, SignerError> {
    let ctx = load_module(path)?;
    Ok(ModuleUse { ctx, path: path.to_path_buf() })
}

fn module_path(uri: &Pkcs11Uri) -> Result<PathBuf, SignerError> {
    if let Some(p) = &uri.module_path {
        return Ok(PathBuf::from(p));
    }
    if let Some(name) = &uri.module_name {
        if name.contains('/') {
            return Err(SignerError::BadUri(format!("module-name={name:?} must be a bare name; use module-path for a path")));
        }
        return MODULE_DIRS.iter().map(|d| Path::new(d).join(format!("{name}.so"))).find(|p| p.exists()).ok_or_else(|| {
            SignerError::BadUri(format!("module-name={name:?} not found in {}; give ?module-path=<library>", MODULE_DIRS.join(", ")))
        });
    }
    if Path::new(DEFAULT_MODULE).exists() {
        return Ok(PathBuf::from(DEFAULT_MODULE));
    }
    Err(SignerError::BadUri(format!(
        "the pkcs11 URI names no module and {DEFAULT_MODULE} does not exist: \
         add ?module-path=/path/to/your-pkcs11-library.so"
    )))
}

fn load_module(path: &Path) -> Result<Pkcs11, SignerError> {
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while loading; the
    // map itself is still consistent (insert is the last step).
    let mut map = modules.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = map.get_mut(path) {
        l.users += 1;
        return Ok(l.ctx.clone());
    }
    if !path.exists() {
        return Err(SignerError::BadUri(format!("PKCS#11 module {} does not exist: fix module-path", path.display())));
    }
    let ctx = Pkcs11::new(path).map_err(|e| SignerError::Failed(format!("cannot load PKCS#11 module {}: {e}", path.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(map_err(e, &format!("initializing {}", path.display()))),
    }
    tracing::info!(module = %path.display(), "PKCS#11 module loaded");
    map.insert(path.to_path_buf(), Loaded { ctx: ctx.clone(), users: 1 });
    Ok(ctx)
}

fn describe_token(uri: &Pkcs11Uri) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &uri.token {
        parts.push(format!("token={t:?}"));
    }
    if let Some(s) = &uri.serial {
        parts.push(format!("serial={s:?}"));
    }
    if let Some(n) = uri.slot_id {
        parts.push(format!("slot-id={n}"));
    }
    if parts.is_empty() {
        "any token".into()
    } else {
        parts.join(" ")
    }
}

/// The slot holding the token the URI names. Matches by label, serial,
/// manufacturer and model (SoftHSM renumbers slots, so labels beat slot ids).
fn find_slot(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, SignerError> {
    let slots = ctx.get_slots_with_token().map_err(|e| map_err(e, "listing slots"))?;
    let mut present = Vec::new();
    let mut matches = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|n| n != slot.id()) {
            continue;
        }
        let ti = match ctx.get_token_info(slot) {
            Ok(ti) => ti,
            Err(e) => {
                tracing::debug!(slot = slot.id(), error = %e, "skipping slot");
                continue;
            }
        };
        present.push(format!("{:?}", ti.label()));
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w.trim_end() == have.trim_end());
        if !(eq(&uri.token, ti.label())
            && eq(&uri.serial, ti.serial_number())
            && eq(&uri.manufacturer, ti.manufacturer_id())
            && eq(&uri.model, ti.model()))
        {
            continue;
        }
        if uri.slot_description.is_some() || uri.slot_manufacturer.is_some() {
            match ctx.get_slot_info(slot) {
                Ok(si) => {
                    if !(eq(&uri.slot_description, si.slot_description()) && eq(&uri.slot_manufacturer, si.manufacturer_id())) {
                        continue;
                    }
                }
                Err(_) => continue,
            }
        }
        matches.push(slot);
    }
    match matches.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(SignerError::TokenAbsent(format!("no token matches {}; tokens present: [{}]", describe_token(uri), present.join(", ")))),
        _ => Err(SignerError::BadUri(format!(
            "{} tokens match {}: add token= (label) or serial= to the URI",
            matches.len(),
            describe_token(uri)
        ))),
    }
}

fn login(session: &Session, pin: &Pin) -> Result<(), SignerError> {
    let auth = AuthPin::from(pin.expose());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(map_err(e, "logging in")),
    }
}

fn describe_key(uri: &Pkcs11Uri) -> String {
    match (&uri.object, &uri.id) {
        (Some(o), Some(id)) => format!("object={o:?} id={}", hex::encode(id)),
        (Some(o), None) => format!("object={o:?}"),
        (None, Some(id)) => format!("id={}", hex::encode(id)),
        (None, None) => "any EC private key".into(),
    }
}

fn find_one(session: &Session, template: &[Attribute], what: &str) -> Result<Vec<ObjectHandle>, SignerError> {
    session.find_objects(template).map_err(|e| map_err(e, &format!("searching for {what}")))
}

/// The EC private key the URI names: exactly one match.
fn find_private_key(session: &Session, uri: &Pkcs11Uri, token: &str) -> Result<ObjectHandle, SignerError> {
    let mut t = vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(KeyType::EC)];
    if let Some(o) = &uri.object {
        t.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    let found = find_one(session, &t, "the CA private key")?;
    match found.as_slice() {
        [h] => Ok(*h),
        [] => Err(SignerError::KeyNotFound(format!(
            "no EC private key with {} on token {token:?}: check object=/id= in the URI \
             (pkcs11-tool --list-objects --login shows the keys)",
            describe_key(uri)
        ))),
        many => Err(SignerError::BadUri(format!(
            "{} EC private keys match {} on token {token:?}: add object= and/or id= to the URI",
            many.len(),
            describe_key(uri)
        ))),
    }
}

/// The algorithm and DER SubjectPublicKeyInfo of `private`, from its public
/// key object (same CKA_ID, else same CKA_LABEL).
fn public_key_of(session: &Session, private: ObjectHandle) -> Result<(SigAlg, Vec<u8>), SignerError> {
    let attrs = session
        .get_attributes(private, &[AttributeType::Id, AttributeType::Label])
        .map_err(|e| map_err(e, "reading the private key's attributes"))?;
    let mut id = Vec::new();
    let mut label = Vec::new();
    for a in attrs {
        match a {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = v,
            _ => {}
        }
    }
    let base = vec![Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::KeyType(KeyType::EC)];
    let mut candidates = Vec::new();
    if !id.is_empty() {
        let mut t = base.clone();
        t.push(Attribute::Id(id.clone()));
        candidates = find_one(session, &t, "the CA public key")?;
        if candidates.len() > 1 && !label.is_empty() {
            t.push(Attribute::Label(label.clone()));
            candidates = find_one(session, &t, "the CA public key")?;
        }
    }
    if candidates.is_empty() && !label.is_empty() {
        let mut t = base;
        t.push(Attribute::Label(label.clone()));
        candidates = find_one(session, &t, "the CA public key")?;
    }
    let public = match candidates.as_slice() {
        [h] => *h,
        [] => {
            return Err(SignerError::KeyNotFound(format!(
                "the private key (label {:?}, id {}) has no public key object on the token; \
                 import the public key with the same CKA_ID",
                String::from_utf8_lossy(&label),
                hex::encode(&id)
            )))
        }
        many => {
            return Err(SignerError::Failed(format!(
                "{} public key objects match the private key (label {:?}, id {}); give each key a unique id",
                many.len(),
                String::from_utf8_lossy(&label),
                hex::encode(&id)
            )))
        }
    };
    let attrs = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| map_err(e, "reading the public key"))?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Err(SignerError::Failed("the public key object lacks CKA_EC_PARAMS or CKA_EC_POINT".into()));
    };
    let alg = alg_from_params(&params)?;
    let raw = ec_point_raw(alg, &point)?;
    Ok((alg, crate::ec_spki(alg, &raw)?))
}

/// A rejected PIN, said the way an operator needs it: how many tries are
/// left before the token locks, as far as the token tells (PKCS#11 gives
/// "few" and "last", not a number).
fn with_tries_left(ctx: &Pkcs11, slot: cryptoki::slot::Slot, e: SignerError) -> SignerError {
    let SignerError::PinRejected(_) = &e else { return e };
    let tries = match ctx.get_token_info(slot) {
        Ok(t) if t.user_pin_locked() => {
            return SignerError::PinLocked(
                "The PIN is now locked after too many wrong tries: the token's security officer must unlock it.".into(),
            )
        }
        Ok(t) if t.user_pin_final_try() => " Only one try is left before the token locks.",
        Ok(t) if t.user_pin_count_low() => " Few tries are left before the token locks.",
        _ => "",
    };
    SignerError::PinRejected(format!("The PIN was not accepted: check it and enter it again.{tries}"))
}

/// A logged-in session with the key found.
struct Connection {
    session: Session,
    key: ObjectHandle,
    alg: SigAlg,
    spki: Vec<u8>,
}

fn connect(ctx: &Pkcs11, uri: &Pkcs11Uri, pin: &Pin) -> Result<Connection, SignerError> {
    let slot = find_slot(ctx, uri)?;
    let token = ctx.get_token_info(slot).map(|t| t.label().to_string()).map_err(|e| map_err(e, "reading token info"))?;
    let session = ctx.open_ro_session(slot).map_err(|e| map_err(e, "opening a session"))?;
    if let Err(e) = login(&session, pin) {
        return Err(with_tries_left(ctx, slot, e));
    }
    let key = find_private_key(&session, uri, &token)?;
    let (alg, spki) = public_key_of(&session, key)?;
    Ok(Connection { session, key, alg, spki })
}

/// A CA key in a PKCS#11 token. Dropping it closes its session and then
/// releases the module (finalized when it was the last user), in that
/// order, on the dropping thread.
pub struct Pkcs11Signer {
    uri: Pkcs11Uri,
    shown_uri: String,
    pin: Pin,
    conn: Connection,
    /// The module's own `C_Sign`, for signing on an operation started ahead
    /// ([`Signer::prepare`]); `None` when it could not be taken (the signer
    /// then signs with cryptoki's `Session::sign`, never ahead).
    raw: Option<RawSign>,
    /// `C_SignInit` has been called on `conn.session` for `conn.key` and no
    /// `C_Sign` has ended that operation yet.
    ahead: bool,
    // Last: dropped after the session is closed.
    ctx: ModuleUse,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer({})", self.shown_uri)
    }
}

impl Pkcs11Signer {
    /// Open the key a `pkcs11:` URI names: load the module, find the token by
    /// label/serial, open a read-only session, log in as user and find the
    /// EC private key and its public key. `pin` is resolved as in
    /// [`resolve_pin`].
    pub fn open(uri: &str, pin: Option<Pin>) -> Result<Self, SignerError> {
        let uri = Pkcs11Uri::parse(uri)?;
        let pin = resolve_pin(pin, uri.pin_source.as_deref())?;
        let path = module_path(&uri)?;
        let ctx = use_module(&path)?;
        let conn = connect(&ctx, &uri, &pin)?;
        let shown_uri = uri.to_string();
        let raw = RawSign::load(&path, conn.session.handle())
            .map_err(|e| tracing::info!(uri = %shown_uri, reason = %e, "PKCS#11: signatures are not started ahead with this module"))
            .ok();
        tracing::info!(uri = %shown_uri, alg = conn.alg.name(), "PKCS#11 CA key opened");
        Ok(Self { ctx, uri, shown_uri, pin, conn, raw, ahead: false })
    }

    /// Whether this signer can start a signature ahead ([`Signer::prepare`]):
    /// false for a module whose function list, taken a second time, does not
    /// reach cryptoki's session (see `sign_ahead`).
    pub fn signs_ahead(&self) -> bool {
        self.raw.is_some()
    }

    /// A raw CKM_ECDSA signature of `digest`: `C_Sign` alone when the
    /// operation was started ahead, else `C_SignInit` then `C_Sign` (one
    /// call with a buffer of the curve's size, not cryptoki's length query
    /// and second call).
    fn sign_digest(&mut self, digest: &[u8]) -> Result<Vec<u8>, CkError> {
        let Some(raw) = &self.raw else {
            return self.conn.session.sign(&Mechanism::Ecdsa, self.conn.key, digest);
        };
        let len = 2 * self.conn.alg.field_len();
        let was_ahead = std::mem::take(&mut self.ahead);
        if !was_ahead {
            self.conn.session.sign_init(&Mechanism::Ecdsa, self.conn.key)?;
        }
        match raw.sign(self.conn.session.handle(), digest, len) {
            // The token forgot the operation started ahead (it may end
            // operations it holds, as a network HSM that reconnected): start
            // it again now, once.
            Err(CkError::Pkcs11(RvError::OperationNotInitialized, _)) if was_ahead => {
                self.conn.session.sign_init(&Mechanism::Ecdsa, self.conn.key)?;
                raw.sign(self.conn.session.handle(), digest, len)
            }
            r => r,
        }
    }

    /// Open a new session and log in again; the key must be the same one.
    fn reconnect(&mut self) -> Result<(), SignerError> {
        let conn = connect(&self.ctx, &self.uri, &self.pin)?;
        if conn.spki != self.conn.spki {
            return Err(SignerError::Failed(format!(
                "after reconnecting, {} names a different key than before: refusing to sign",
                self.shown_uri
            )));
        }
        self.conn = conn;
        // The new session has no operation started.
        self.ahead = false;
        Ok(())
    }
}

impl Signer for Pkcs11Signer {
    fn info(&self) -> SignerInfo {
        SignerInfo { kind: "pkcs11", uri: self.shown_uri.clone(), development: false }
    }

    fn algorithm(&self) -> SigAlg {
        self.conn.alg
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.conn.spki
    }

    /// Start the next signature (`C_SignInit`) while the worker has nothing
    /// queued: the key is found and unwrapped by the token now, and the next
    /// [`Signer::sign`] is a single `C_Sign`. A failure here is left to that
    /// `sign`, which starts the operation itself (and reconnects if the
    /// session is gone).
    fn prepare(&mut self) {
        if self.ahead || self.raw.is_none() {
            return;
        }
        match self.conn.session.sign_init(&Mechanism::Ecdsa, self.conn.key) {
            Ok(()) => self.ahead = true,
            Err(e) => tracing::debug!(uri = %self.shown_uri, error = %e, "PKCS#11: the next signature was not started ahead"),
        }
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let digest = self.conn.alg.digest(msg);
        let raw = match self.sign_digest(&digest) {
            Ok(raw) => raw,
            Err(e) if needs_reconnect(&e) => {
                tracing::warn!(uri = %self.shown_uri, error = %e,
                    "PKCS#11 session lost; opening a new session and logging in again");
                self.reconnect()?;
                self.sign_digest(&digest).map_err(|e| map_err(e, "signing after reconnecting"))?
            }
            Err(e) => return Err(map_err(e, "signing")),
        };
        if raw.len() != 2 * self.conn.alg.field_len() {
            return Err(SignerError::Failed(format!("the token returned a {}-byte signature for {}", raw.len(), self.conn.alg.name())));
        }
        ecdsa_raw_to_der(&raw)
    }
}

/// Generate an EC CA key pair in the token the URI names, labelled with the
/// URI's `object=` (required) and `id=` (8 random bytes if absent). The
/// private key is sensitive, non-extractable and sign-only (CKA_SIGN true;
/// CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER false), the public
/// key verify-only (CKA_ENCRYPT, CKA_WRAP, CKA_DERIVE, CKA_VERIFY_RECOVER
/// false). Refuses when an
/// object with that label (or id) already exists.
pub fn generate_ca_key(uri: &str, pin: Option<Pin>, alg: SigAlg) -> Result<(), SignerError> {
    let uri = Pkcs11Uri::parse(uri)?;
    let label = uri.object.clone().ok_or_else(|| SignerError::BadUri("to create a key the URI must name it: add object=<label>".into()))?;
    let params = ec_params(alg)?;
    let pin = resolve_pin(pin, uri.pin_source.as_deref())?;
    let ctx = use_module(&module_path(&uri)?)?;
    let slot = find_slot(&ctx, &uri)?;
    let session = ctx.open_rw_session(slot).map_err(|e| map_err(e, "opening a read-write session"))?;
    login(&session, &pin)?;

    let by_label = find_one(&session, &[Attribute::Label(label.as_bytes().to_vec())], "existing objects")?;
    if !by_label.is_empty() {
        return Err(SignerError::Failed(format!(
            "an object labelled {label:?} already exists on the token: \
             refusing to create another key; choose a new object= label"
        )));
    }
    let id = match &uri.id {
        Some(id) => {
            if !find_one(&session, &[Attribute::Id(id.clone())], "existing objects")?.is_empty() {
                return Err(SignerError::Failed(format!(
                    "an object with id {} already exists on the token: choose a new id=",
                    hex::encode(id)
                )));
            }
            id.clone()
        }
        None => session.generate_random_vec(8).map_err(|e| map_err(e, "generating a key id"))?,
    };

    // Sign-only, said explicitly: a token's defaults for the usages left
    // out of a template are its own (SoftHSM sets CKA_DECRYPT, CKA_UNWRAP,
    // CKA_SIGN_RECOVER true on an EC private key made without them).
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        Attribute::VerifyRecover(false),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::SignRecover(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private).map_err(|e| map_err(e, "generating the CA key pair"))?;
    tracing::info!(label = %label, id = %hex::encode(&id), alg = alg.name(), "CA key generated in token");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_decoding_by_length() {
        let mut raw = vec![0x04u8];
        raw.extend_from_slice(&[0xaa; 64]);
        assert_eq!(ec_point_raw(SigAlg::EcdsaP256Sha256, &raw).unwrap(), raw);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&raw);
        assert_eq!(ec_point_raw(SigAlg::EcdsaP256Sha256, &wrapped).unwrap(), raw);
        let mut raw384 = vec![0x04u8];
        raw384.extend_from_slice(&[0x04; 96]);
        assert_eq!(ec_point_raw(SigAlg::EcdsaP384Sha384, &raw384).unwrap(), raw384);
        let mut wrapped384 = vec![0x04, 97];
        wrapped384.extend_from_slice(&raw384);
        assert_eq!(ec_point_raw(SigAlg::EcdsaP384Sha384, &wrapped384).unwrap(), raw384);
        assert!(ec_point_raw(SigAlg::EcdsaP256Sha256, &raw384).is_err());
        assert!(ec_point_raw(SigAlg::EcdsaP256Sha256, &[0x02; 65]).is_err());
    }

    #[test]
    fn curves_round_trip() {
        for alg in [SigAlg::EcdsaP256Sha256, SigAlg::EcdsaP384Sha384] {
            assert_eq!(alg_from_params(ec_params(alg).unwrap()).unwrap(), alg);
        }
        assert!(alg_from_params(&[0x06, 0x03, 1, 2, 3]).is_err());
    }

    #[test]
    fn error_mapping() {
        use cryptoki::context::Function;
        let e = |rv| map_err(CkError::Pkcs11(rv, Function::Login), "x");
        assert!(matches!(e(RvError::PinIncorrect), SignerError::PinRejected(_)));
        assert!(matches!(e(RvError::PinLocked), SignerError::PinLocked(_)));
        assert!(matches!(e(RvError::TokenNotPresent), SignerError::TokenAbsent(_)));
        assert!(matches!(e(RvError::DeviceError), SignerError::Transient(_)));
        assert!(matches!(e(RvError::MechanismInvalid), SignerError::Failed(_)));
        assert!(needs_reconnect(&CkError::Pkcs11(RvError::SessionHandleInvalid, Function::Sign)));
        assert!(!needs_reconnect(&CkError::Pkcs11(RvError::PinIncorrect, Function::Sign)));
    }

    #[test]
    fn missing_module_is_a_clear_error() {
        let err =
            Pkcs11Signer::open("pkcs11:token=x;object=y?module-path=/nonexistent/libpkcs11.so", Some(Pin::new("1234"))).err().unwrap();
        assert!(matches!(err, SignerError::BadUri(_)), "{err}");
        assert!(err.to_string().contains("module-path"));
    }

    #[test]
    fn generate_requires_object_label() {
        let err = generate_ca_key("pkcs11:token=x", Some(Pin::new("1234")), SigAlg::EcdsaP256Sha256).unwrap_err();
        assert!(matches!(err, SignerError::BadUri(_)));
        assert!(err.to_string().contains("object="));
    }
}
