//! Key-encryption keys: what protects the data keys of blobs, staged uploads
//! and manifests (envelope encryption, `docs/security.md`).
//!
//! Every piece of data at rest is encrypted under its own random data key
//! ([`DataKey`]); the data key is stored only wrapped by a key-encryption key
//! named by a [`KeyRef`]:
//! - [`KeyRef::ServerManaged`]: ECR's `AES256` setting, a key the server owns;
//! - [`KeyRef::Kms`]: a KMS key of the account (ECR's `KMS` setting), by ARN,
//!   whose state (enabled, disabled, pending deletion, deleted) decides whether
//!   what it protects can be read.
//!
//! [`KeyRing`] is the one place that wraps and unwraps data keys; callers never
//! see key material.

use crate::metadata::{MetaError, MetadataStore};
use crate::secrets::{MasterKey, random_bytes};

/// A 256-bit data key, wiped from memory when dropped. Never printed.
#[derive(Clone)]
pub struct DataKey(zeroize::Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> DataKey {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        random_bytes(&mut k[..]);
        DataKey(k)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<DataKey> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(zeroize::Zeroizing::new(arr)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The key-encryption key that protects some data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// ECR's `AES256`: the server-managed key.
    ServerManaged,
    /// A KMS key, by its ARN.
    Kms(String),
}

impl KeyRef {
    /// How the key is recorded next to what it wrapped: `AES256` or the key ARN.
    pub fn as_str(&self) -> &str {
        match self {
            KeyRef::ServerManaged => "AES256",
            KeyRef::Kms(arn) => arn,
        }
    }

    pub fn parse(s: &str) -> KeyRef {
        if s == "AES256" {
            KeyRef::ServerManaged
        } else {
            KeyRef::Kms(s.to_string())
        }
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be used. The `/v2/` face answers 403 naming the key,
/// the ECR API `KmsException`, the KMS API its own exception names.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("Key '{0}' does not exist")]
    NotFound(String),
    #[error("{0} is disabled.")]
    Disabled(String),
    #[error("{0} is pending deletion.")]
    PendingDeletion(String),
    /// Deleted after its waiting period: what only it protected is gone.
    #[error(
        "{0} was deleted; the data it protected cannot be decrypted by anyone (crypto-shredded)"
    )]
    Deleted(String),
    /// A wrapped key or ciphertext that this key did not produce, or that was altered.
    #[error("the ciphertext is invalid, was altered, or belongs to another key")]
    InvalidCiphertext,
    /// The external key custody (OpenBao / Vault transit) cannot be reached.
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl KmsError {
    /// Whether the failure is the key's state (disabled, pending deletion,
    /// deleted, missing), as opposed to bad data or an outage.
    pub fn is_key_state(&self) -> bool {
        matches!(
            self,
            KmsError::NotFound(_)
                | KmsError::Disabled(_)
                | KmsError::PendingDeletion(_)
                | KmsError::Deleted(_)
        )
    }
}

/// Wraps and unwraps data keys under key-encryption keys.
pub struct KeyRing {
    #[allow(dead_code)]
    meta: MetadataStore,
    master: MasterKey,
    #[allow(dead_code)]
    region: String,
}

/// Associated data of a server-managed wrap (with the caller's context).
const SERVER_WRAP: &str = "berth/aes256:";

impl KeyRing {
    pub fn new(meta: MetadataStore, master: MasterKey, region: &str) -> KeyRing {
        KeyRing {
            meta,
            master,
            region: region.to_string(),
        }
    }

    /// The key a repository's encryption settings name: `AES256` is the
    /// server-managed key; `KMS` (or `KMS_DSSE`) the key `kms_key` names in
    /// `account` (key id, key ARN, alias name or alias ARN), or the account's
    /// AWS-managed `aws/ecr` key when none is given.
    pub async fn repository_key(
        &self,
        _account: &str,
        encryption_type: &str,
        kms_key: Option<&str>,
    ) -> Result<KeyRef, KmsError> {
        match encryption_type {
            "AES256" => Ok(KeyRef::ServerManaged),
            _ => Err(KmsError::NotFound(
                kms_key.unwrap_or("alias/aws/ecr").into(),
            )),
        }
    }

    /// Wrap `dek` under `key`; `context` (what the key protects, e.g.
    /// `blob:<digest>`) is bound to the result, so a wrapped key cannot be
    /// moved to other data.
    pub async fn wrap(
        &self,
        key: &KeyRef,
        dek: &DataKey,
        context: &str,
    ) -> Result<Vec<u8>, KmsError> {
        match key {
            KeyRef::ServerManaged => Ok(self
                .master
                .seal(dek.bytes(), &format!("{SERVER_WRAP}{context}"))),
            KeyRef::Kms(arn) => Err(KmsError::NotFound(arn.clone())),
        }
    }

    /// The data key `wrapped` holds, if `key` is usable and produced it for `context`.
    pub async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &str,
    ) -> Result<DataKey, KmsError> {
        match key {
            KeyRef::ServerManaged => {
                let plain = zeroize::Zeroizing::new(
                    self.master
                        .unseal(wrapped, &format!("{SERVER_WRAP}{context}"))
                        .map_err(|_| KmsError::InvalidCiphertext)?,
                );
                DataKey::from_bytes(&plain).ok_or(KmsError::InvalidCiphertext)
            }
            KeyRef::Kms(arn) => Err(KmsError::NotFound(arn.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_managed_wrap_round_trip_and_binding() {
        let fixture =
            crate::metadata::testing::Fixture::new(crate::metadata::testing::Engine::Sqlite).await;
        let meta = fixture.open().await;
        let ring = KeyRing::new(meta, MasterKey::from_bytes(&[5; 32]), "us-east-1");
        let dek = DataKey::generate();
        let w = ring
            .wrap(&KeyRef::ServerManaged, &dek, "blob:a")
            .await
            .unwrap();
        let back = ring
            .unwrap(&KeyRef::ServerManaged, &w, "blob:a")
            .await
            .unwrap();
        assert_eq!(back.bytes(), dek.bytes());
        assert!(matches!(
            ring.unwrap(&KeyRef::ServerManaged, &w, "blob:b").await,
            Err(KmsError::InvalidCiphertext)
        ));
    }
}
