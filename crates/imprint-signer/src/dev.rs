//! The development CA: a software P-256 key in a file. Never for production;
//! everything it signs is marked DEVELOPMENT.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use imprint_core::signer::{SigAlg, Signer, SignerError, SignerInfo};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use zeroize::Zeroizing;

/// File name of the key inside the development CA directory.
pub const DEV_KEY_FILE: &str = "dev-ca-key.pem";

/// A software P-256 CA key stored as PKCS#8 PEM (mode 0600) in a directory,
/// created on first use.
pub struct DevSigner {
    dir: PathBuf,
    key: EcdsaKeyPair,
    spki: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevSigner({})", self.dir.display())
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SignerError {
    SignerError::Failed(format!("{what} {}: {e}", path.display()))
}

impl DevSigner {
    /// Open the development key in `dir`, creating the directory and the key
    /// (atomically: a temporary file linked into place) if needed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SignerError> {
        let dir = dir.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(SignerError::BadUri("dev: needs a directory, e.g. dev:/var/lib/imprint/dev-ca".into()));
        }
        let rng = SystemRandom::new();
        let path = dir.join(DEV_KEY_FILE);
        if !path.exists() {
            create_key(&dir, &path, &rng)?;
        }
        let text = Zeroizing::new(fs::read_to_string(&path).map_err(|e| io_err("cannot read", &path, e))?);
        tighten_modes(&dir, &path);
        let block = pem::parse(text.as_bytes()).map_err(|e| SignerError::Failed(format!("{} is not PEM: {e}", path.display())))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(SignerError::Failed(format!(
                "{} holds a {:?} block, expected a PKCS#8 \"PRIVATE KEY\"",
                path.display(),
                block.tag()
            )));
        }
        let der = Zeroizing::new(block.into_contents());
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
            .map_err(|e| SignerError::Failed(format!("{} is not a P-256 PKCS#8 key: {e}", path.display())))?;
        let spki = crate::ec_spki(SigAlg::EcdsaP256Sha256, key.public_key().as_ref())?;
        tracing::warn!(dir = %dir.display(), "using the DEVELOPMENT CA key: not for production");
        Ok(Self { dir, key, spki, rng })
    }

    /// The directory holding the key.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn create_key(dir: &Path, path: &Path, rng: &SystemRandom) -> Result<(), SignerError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
        .map_err(|e| SignerError::Failed(format!("generating the development key: {e}")))?;
    let pem_text = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec())));
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix).map_err(|_| SignerError::Failed("system random generator failed".into()))?;
    let tmp = dir.join(format!(".{DEV_KEY_FILE}.{}.tmp", hex::encode(suffix)));

    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = |opts: &fs::OpenOptions| -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(pem_text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write(&opts) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot write", &tmp, e));
    }
    // hard_link never replaces an existing file: if another process created
    // the key meanwhile, keep theirs.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            tracing::warn!(path = %path.display(), "created a new DEVELOPMENT CA key");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("cannot create", path, e)),
    }
}

/// The key 0600 and its directory 0700: tightened if someone widened them
/// (a key that others could read is still worth a warning: it may have
/// been copied).
fn tighten_modes(dir: &Path, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (p, want) in [(dir, 0o700), (path, 0o600)] {
            let Ok(m) = fs::metadata(p) else { continue };
            let mode = m.permissions().mode() & 0o777;
            if mode != want {
                if p == path && mode & 0o077 != 0 {
                    tracing::warn!(path = %p.display(), mode = format!("{mode:o}"),
                        "the development CA key was readable by others: made it 0600");
                }
                if let Err(e) = fs::set_permissions(p, fs::Permissions::from_mode(want)) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot make the development CA private");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, path);
}

impl Signer for DevSigner {
    fn info(&self) -> SignerInfo {
        SignerInfo { kind: "dev", uri: format!("dev:{}", self.dir.display()), development: true }
    }

    fn algorithm(&self) -> SigAlg {
        SigAlg::EcdsaP256Sha256
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.key.sign(&self.rng, msg).map(|s| s.as_ref().to_vec()).map_err(|_| SignerError::Failed("development key failed to sign".into()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_mode_and_reloads_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev-ca");
        let a = DevSigner::open(&dir).unwrap();
        let b = DevSigner::open(&dir).unwrap();
        assert_eq!(a.public_key_spki(), b.public_key_spki());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(DEV_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(DEV_KEY_FILE)]);
        let info = a.info();
        assert_eq!(info.kind, "dev");
        assert!(info.development);
        assert_eq!(info.uri, format!("dev:{}", dir.display()));
    }

    #[test]
    fn signature_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = DevSigner::open(tmp.path()).unwrap();
        let sig = s.sign(b"hello").unwrap();
        let raw = imprint_core::signer::spki_subject_key_bits(s.public_key_spki()).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, raw).verify(b"hello", &sig).unwrap();
    }

    #[test]
    fn rejects_a_non_key_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DEV_KEY_FILE), pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]))).unwrap();
        assert!(matches!(DevSigner::open(tmp.path()), Err(SignerError::Failed(_))));
    }
}
