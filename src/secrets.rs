//! Secrets at rest: the server's master key and sealing with it.
//!
//! Access-key secrets and the token-signing key are stored in the metadata
//! database sealed with AES-256-GCM under the master key, so a copy of the
//! database alone reveals no credential. The master key comes from a file
//! (`--master-key-file`, ideally outside the data directory so that backups
//! of the data do not carry it), from `BERTH_MASTER_KEY` (64 hex characters;
//! every node of a scale-out deployment must have the same one) or, in the
//! embedded default, from `<data_dir>/master.key`; a key file is created with
//! mode 0600 on first start.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};

pub use berth_seal::random_bytes;

/// What [`seal_with`] adds to a value: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = berth_seal::NONCE + berth_seal::TAG;

/// Seal `plaintext` with AES-256-GCM under `key` (random nonce first), with
/// `context` bound as associated data.
pub fn seal_with(key: &[u8; 32], plaintext: &[u8], context: &str) -> Vec<u8> {
    berth_seal::seal(key, plaintext, context)
}

/// Open what [`seal_with`] sealed under `key` for `context`.
pub fn open_with(key: &[u8; 32], sealed: &[u8], context: &str) -> Result<Vec<u8>, UnsealError> {
    berth_seal::open(key, sealed, context).map_err(|_| UnsealError)
}

/// The key that seals every stored secret. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be unsealed (wrong master key or corrupted data)")]
pub struct UnsealError;

impl MasterKey {
    pub fn from_bytes(key: &[u8; 32]) -> MasterKey {
        MasterKey {
            key: zeroize::Zeroizing::new(*key),
        }
    }

    /// The master key from `file` (`--master-key-file`), or `env_value`
    /// (`BERTH_MASTER_KEY`, hex), or `<data_dir>/master.key`; a key file that
    /// does not exist yet is created (mode 0600) with a fresh random key.
    pub fn load(
        file: Option<&Path>,
        env_value: Option<&str>,
        data_dir: &Path,
    ) -> anyhow::Result<MasterKey> {
        match (file, env_value) {
            (Some(_), Some(_)) => {
                bail!(
                    "give the master key either as --master-key-file or as BERTH_MASTER_KEY, not both"
                )
            }
            (None, Some(v)) => Self::from_hex(v.trim()).context("BERTH_MASTER_KEY"),
            (Some(f), None) => Self::load_file(f),
            (None, None) => Self::load_file(&data_dir.join("master.key")),
        }
    }

    fn load_file(path: &Path) -> anyhow::Result<MasterKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(text.trim())
                .with_context(|| format!("reading master key {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                random_bytes(&mut key);
                let mut f = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("creating master key {}", path.display()))?
                };
                f.write_all(hex::encode(key).as_bytes())?;
                f.sync_all()?;
                Ok(Self::from_bytes(&key))
            }
            Err(e) => Err(e).with_context(|| format!("reading master key {}", path.display())),
        }
    }

    fn from_hex(text: &str) -> anyhow::Result<MasterKey> {
        let bytes = hex::decode(text).context("the master key must be 64 hex characters")?;
        let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("the master key must be 64 hex characters (32 bytes)");
        };
        Ok(Self::from_bytes(&key))
    }

    /// Seal `plaintext`; `context` (e.g. the access key id) is bound as associated
    /// data, so a sealed value cannot be moved to another row.
    /// A key for `purpose` derived from the master key (HMAC-SHA256), so
    /// one secret serves several uses without one revealing another.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.key[..])
            .expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        seal_with(&self.key, plaintext, context)
    }

    pub fn unseal(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, UnsealError> {
        open_with(&self.key, sealed, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = MasterKey::from_bytes(&[7u8; 32]);
        let sealed = k.seal(b"secret", "AKIA1");
        assert_eq!(k.unseal(&sealed, "AKIA1").unwrap(), b"secret");
        assert!(k.unseal(&sealed, "AKIA2").is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]);
        assert!(other.unseal(&sealed, "AKIA1").is_err());
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load(None, None, dir.path()).unwrap();
        let sealed = a.seal(b"x", "c");
        let b = MasterKey::load(None, None, dir.path()).unwrap();
        assert_eq!(b.unseal(&sealed, "c").unwrap(), b"x");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(MasterKey::load(None, Some("abc"), dir.path()).is_err());
        // A key file outside the data directory, created on first use.
        let outside = tempfile::tempdir().unwrap();
        let file = outside.path().join("berth.key");
        let c = MasterKey::load(Some(&file), None, dir.path()).unwrap();
        let d = MasterKey::load(Some(&file), None, dir.path()).unwrap();
        assert_eq!(d.unseal(&c.seal(b"y", "c"), "c").unwrap(), b"y");
        assert!(b.unseal(&c.seal(b"y", "c"), "c").is_err());
        assert!(MasterKey::load(Some(&file), Some(&"00".repeat(32)), dir.path()).is_err());
    }
}
