//! A SoftHSM2 token per test, for PKCS#11 integration tests.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, when the library is initialized, and
//! tests in one binary run on parallel threads of one process. So the
//! configuration (and its token directory) is per process, set once; each
//! test gets its own token, told apart by label, made in-process (see
//! [`SoftHsm::new`]) and deleted on drop.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use imprint_signer::Pin;

/// The SoftHSM2 PKCS#11 library.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Security officer PIN of every test token.
pub const SO_PIN: &str = "5678";
/// User PIN of every test token.
pub const USER_PIN: &str = "1234";

/// The per-process SoftHSM configuration directory. Created and exported as
/// `SOFTHSM2_CONF` on first use, before any test loads the library.
fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // One directory per process, kept while the process lives (the
        // loaded library keeps using it); those of dead processes are removed.
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("imprint-softhsm-")) else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("imprint-softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()))
            .expect("write softhsm2.conf");
        // Set once, inside OnceLock, before any thread loads SoftHSM.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        dir
    })
}

fn conf_path() -> PathBuf {
    process_dir().join("softhsm2.conf")
}

/// True when SoftHSM2 and its tool are installed.
pub fn available() -> bool {
    Path::new(MODULE).exists() && Command::new("softhsm2-util").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// One initialized SoftHSM token, deleted on drop.
#[derive(Debug)]
pub struct SoftHsm {
    label: String,
}

/// The fixture's own use of the SoftHSM library, through the signer crate's
/// module registry: it is one more user of the module for the whole test
/// process, so a signer closing in one test never finalizes SoftHSM under
/// another test (the last user of a module finalizes it).
fn ctx() -> &'static cryptoki::context::Pkcs11 {
    static CTX: OnceLock<imprint_signer::pkcs11::ModuleUse> = OnceLock::new();
    CTX.get_or_init(|| {
        process_dir();
        imprint_signer::pkcs11::use_module(Path::new(MODULE)).expect("load SoftHSM")
    })
}

fn slot_of(label: &str) -> Option<cryptoki::slot::Slot> {
    let ctx = ctx();
    ctx.get_slots_with_token().expect("slot list").into_iter().find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label() == label))
}

impl SoftHsm {
    /// Initialize a fresh token labelled `label` (unique per test, at most 32
    /// bytes, `[A-Za-z0-9-_]`) with SO PIN 5678 and user PIN 1234.
    ///
    /// The token is made through PKCS#11 in this process (C_InitToken on the
    /// free slot, then C_InitPIN), which is what `softhsm2-util --init-token
    /// --free` does: SoftHSM scans its token directory only at C_Initialize,
    /// so a token `softhsm2-util` makes after the library is loaded stays
    /// invisible to this process.
    pub fn new(label: &str) -> Self {
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        assert!(
            !label.is_empty() && label.len() <= 32 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "token label {label:?} must be 1-32 chars of [A-Za-z0-9-_]"
        );
        // Two tests must not grab the same free slot.
        static INIT: Mutex<()> = Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = ctx();
        assert!(slot_of(label).is_none(), "token {label:?} already exists");
        let free = ctx
            .get_all_slots()
            .expect("slot list")
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|t| !t.token_initialized()))
            .expect("SoftHSM offers a free slot");
        ctx.init_token(free, &AuthPin::from(SO_PIN), label).expect("C_InitToken");
        // SoftHSM renumbers the slot once the token is initialized.
        let slot = slot_of(label).expect("new token is listed");
        let session = ctx.open_rw_session(slot).expect("SO session");
        session.login(UserType::So, Some(&AuthPin::from(SO_PIN))).expect("SO login");
        session.init_pin(&AuthPin::from(USER_PIN)).expect("C_InitPIN");
        session.logout().expect("SO logout");
        SoftHsm { label: label.to_string() }
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN, as a caller would pass it.
    pub fn pin(&self) -> Pin {
        Pin::new(USER_PIN)
    }

    /// The `pkcs11:` URI of the key labelled `key_label` in this token.
    pub fn uri(&self, key_label: &str) -> String {
        assert!(
            key_label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "key label {key_label:?} must be [A-Za-z0-9-_]"
        );
        format!("pkcs11:token={};object={key_label}?module-path={MODULE}", self.label)
    }

    /// The boolean attributes of the private and the public key labelled
    /// `key_label`, read back from the token: (private, public), each by
    /// attribute name (`CKA_SIGN`, `CKA_DECRYPT`, ...). Panics when the pair
    /// is not there.
    pub fn key_flags(&self, key_label: &str) -> (BTreeMap<&'static str, bool>, BTreeMap<&'static str, bool>) {
        use cryptoki::object::{Attribute, AttributeType, ObjectClass};
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let slot = slot_of(&self.label).expect("token slot");
        let session = ctx().open_ro_session(slot).expect("session");
        // Private objects are found only when logged in (a signer in this
        // process may be logged in already: login state is per token).
        let _ = session.login(UserType::User, Some(&AuthPin::from(USER_PIN)));
        let read = |class: ObjectClass, names: &[(&'static str, AttributeType)]| {
            let found =
                session.find_objects(&[Attribute::Class(class), Attribute::Label(key_label.as_bytes().to_vec())]).expect("C_FindObjects");
            assert_eq!(found.len(), 1, "one {class:?} labelled {key_label:?}");
            let types: Vec<AttributeType> = names.iter().map(|(_, t)| *t).collect();
            let attrs = session.get_attributes(found[0], &types).expect("C_GetAttributeValue");
            let mut out = BTreeMap::new();
            for a in attrs {
                let (t, v) = match a {
                    Attribute::Sign(v) => (AttributeType::Sign, v),
                    Attribute::SignRecover(v) => (AttributeType::SignRecover, v),
                    Attribute::Decrypt(v) => (AttributeType::Decrypt, v),
                    Attribute::Unwrap(v) => (AttributeType::Unwrap, v),
                    Attribute::Derive(v) => (AttributeType::Derive, v),
                    Attribute::Sensitive(v) => (AttributeType::Sensitive, v),
                    Attribute::Extractable(v) => (AttributeType::Extractable, v),
                    Attribute::Verify(v) => (AttributeType::Verify, v),
                    Attribute::VerifyRecover(v) => (AttributeType::VerifyRecover, v),
                    Attribute::Encrypt(v) => (AttributeType::Encrypt, v),
                    Attribute::Wrap(v) => (AttributeType::Wrap, v),
                    other => panic!("unexpected attribute {other:?}"),
                };
                let name = names.iter().find(|(_, n)| *n == t).map(|(name, _)| *name).expect("asked for");
                out.insert(name, v);
            }
            assert_eq!(out.len(), names.len(), "the token reported every attribute asked for: {out:?}");
            out
        };
        let private = read(
            ObjectClass::PRIVATE_KEY,
            &[
                ("CKA_SIGN", AttributeType::Sign),
                ("CKA_SIGN_RECOVER", AttributeType::SignRecover),
                ("CKA_DECRYPT", AttributeType::Decrypt),
                ("CKA_UNWRAP", AttributeType::Unwrap),
                ("CKA_DERIVE", AttributeType::Derive),
                ("CKA_SENSITIVE", AttributeType::Sensitive),
                ("CKA_EXTRACTABLE", AttributeType::Extractable),
            ],
        );
        let public = read(
            ObjectClass::PUBLIC_KEY,
            &[
                ("CKA_VERIFY", AttributeType::Verify),
                ("CKA_VERIFY_RECOVER", AttributeType::VerifyRecover),
                ("CKA_ENCRYPT", AttributeType::Encrypt),
                ("CKA_WRAP", AttributeType::Wrap),
                ("CKA_DERIVE", AttributeType::Derive),
            ],
        );
        (private, public)
    }

    /// Log the user out of this token for the whole process (PKCS#11 login
    /// state is shared by every session of a token), as if the HSM had
    /// dropped the login: signers must log in again on their own.
    pub fn force_logout(&self) {
        let slot = slot_of(&self.label).expect("token slot");
        let session = ctx().open_ro_session(slot).expect("session");
        session.logout().expect("C_Logout");
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        let _ = Command::new("softhsm2-util").env("SOFTHSM2_CONF", conf_path()).args(["--delete-token", "--token", &self.label]).output();
    }
}
