//! Single-part `C_Sign` on a session whose `C_SignInit` was called earlier:
//! what lets the PKCS#11 signer start its next signature while nothing waits
//! (issue 18, docs/performance.md "Signing ahead").
//!
//! Why this is hand-written: cryptoki 0.12 calls `C_SignInit` only inside
//! `Session::sign` (init, a length query and the signature in one call) or
//! for a multi-part operation (`sign_init` / `sign_update` / `sign_final`),
//! which `CKM_ECDSA` does not allow (SoftHSM answers
//! `CKR_FUNCTION_NOT_SUPPORTED` to `C_SignUpdate` for it). It exposes no
//! `C_Sign` on its own. So this module takes the module's `C_Sign` from its
//! function list (`C_GetFunctionList` of the same library, which `dlopen`
//! hands back as the instance cryptoki loaded and initialized: one library,
//! one state) and calls it with a buffer sized for the curve: one call, no
//! length query. This is the only `unsafe` in the signer crate.
#![allow(unsafe_code)]

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki_sys::{CKR_OK, CK_FUNCTION_LIST, CK_RV, CK_SESSION_HANDLE, CK_SESSION_INFO, CK_ULONG};

type CSign = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;

/// The module's `C_Sign`, and the library handle that keeps it loaded.
pub(crate) struct RawSign {
    c_sign: CSign,
    // Last: the function pointer above is valid while the library is loaded.
    _lib: cryptoki_sys::Pkcs11,
}

impl RawSign {
    /// Take `C_Sign` from the module at `path`, which cryptoki has already
    /// loaded and initialized (`use_module`), if that function list reaches
    /// the same state as cryptoki's: it must know `session` (cryptoki's open
    /// session). A module that hands each caller of `C_GetFunctionList` a
    /// state of its own (p11-kit's proxy does) fails this check, and the
    /// signer then signs through cryptoki alone, never ahead.
    pub(crate) fn load(path: &Path, session: CK_SESSION_HANDLE) -> Result<Self, String> {
        // SAFETY: loading the module cryptoki already loaded runs no new
        // initializer (dlopen counts a reference to the same instance).
        let lib = unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| format!("loading {}: {e}", path.display()))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to the module's static
        // function list, valid while the module is loaded (kept by `_lib`).
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!("C_GetFunctionList of {} returned {rv:#x}", path.display()));
        }
        // SAFETY: `list` is non-null and points at the module's function list.
        let (c_sign, c_session_info) = unsafe { ((*list).C_Sign, (*list).C_GetSessionInfo) };
        let c_sign = c_sign.ok_or_else(|| format!("{} has no C_Sign", path.display()))?;
        let c_session_info = c_session_info.ok_or_else(|| format!("{} has no C_GetSessionInfo", path.display()))?;
        let mut info = CK_SESSION_INFO { slotID: 0, state: 0, flags: 0, ulDeviceError: 0 };
        // SAFETY: a valid function pointer of the loaded module, and a live out-parameter.
        let rv = unsafe { c_session_info(session, &mut info) };
        if rv != CKR_OK {
            return Err(format!(
                "{}'s C_GetFunctionList does not reach the open session (C_GetSessionInfo returned {rv:#x})",
                path.display()
            ));
        }
        Ok(RawSign { c_sign, _lib: lib })
    }

    /// `C_Sign(session, data)` into a buffer of `max_len` bytes, on a session
    /// whose signing operation was initialized with `C_SignInit`. Returns the
    /// signature; any answer but `CKR_OK` is cryptoki's error (the operation
    /// is then over, as PKCS#11 says for every return but
    /// `CKR_BUFFER_TOO_SMALL`, which a buffer of the curve's size never gets).
    pub(crate) fn sign(&self, session: CK_SESSION_HANDLE, data: &[u8], max_len: usize) -> Result<Vec<u8>, CkError> {
        let mut out = vec![0u8; max_len];
        let mut len = CK_ULONG::try_from(max_len)?;
        let data_len = CK_ULONG::try_from(data.len())?;
        // SAFETY: `data` and `out` are live buffers of the lengths passed;
        // PKCS#11 does not write through pData (the C API lacks `const`);
        // `len` is written with the signature's length, at most `max_len`.
        let rv = unsafe { (self.c_sign)(session, data.as_ptr().cast_mut(), data_len, out.as_mut_ptr(), &mut len) };
        Rv::from(rv).into_result(Function::Sign)?;
        out.truncate(usize::try_from(len)?.min(max_len));
        Ok(out)
    }
}
