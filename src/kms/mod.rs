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

mod keys;
pub mod transit;

/// What the KMS API shows of a key, an alias, a grant, a material version.
pub use crate::metadata::{
    KmsAliasRow as AliasView, KmsGrantRow as GrantView, KmsKeyRow as KeyView,
    KmsMaterialRow as RotationView,
};
pub use keys::{CreateKey, DataKeyPair, Page, ROTATION_PERIOD_DEFAULT_DAYS, canonical_context};

use crate::metadata::{KmsKeyRow, MetaError, MetadataStore, now_millis};
use crate::secrets::{MasterKey, random_bytes};
use transit::Transit;

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
    /// A ciphertext that names another key than the one the caller gave.
    #[error("{0}")]
    IncorrectKey(String),
    /// The key cannot be used for this operation (e.g. a rotation of an AWS-managed key).
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// The operation is not allowed in the key's current state.
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    MalformedPolicy(String),
    #[error("{0}")]
    Tag(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidGrantId(String),
    #[error("{0}")]
    InvalidGrantToken(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl KmsError {
    /// Whether the failure is the key's state (disabled, pending deletion,
    /// deleted, missing), as opposed to bad data or an outage.
    /// KMS's `IncorrectKeyException`: a ciphertext of another key than the one named.
    pub fn incorrect_key() -> KmsError {
        KmsError::IncorrectKey(
            "The key ID in the request does not identify a CMK that can perform this operation."
                .into(),
        )
    }

    /// The metadata database is unreachable (nothing was changed).
    pub fn is_outage(&self) -> bool {
        matches!(self, KmsError::Meta(MetaError::Unavailable(_)))
    }

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

/// Wraps and unwraps data keys under key-encryption keys, and keeps the KMS
/// keys of every account (the KMS API's operations are in `keys`).
///
/// Nothing about a key's state is cached: every use reads the key's row, so
/// disabling, scheduling deletion or deleting a key takes effect at once on
/// every node.
pub struct KeyRing {
    meta: MetadataStore,
    master: MasterKey,
    region: String,
    /// External custody; `None`: material sealed with the master key in the database.
    transit: Option<Transit>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("region", &self.region)
            .field("transit", &self.transit)
            .finish_non_exhaustive()
    }
}

/// Associated data of a server-managed wrap (with the caller's context).
const SERVER_WRAP: &str = "berth/aes256:";

/// The alias of the AWS-managed key ECR uses when a repository names none.
pub const MANAGED_ALIAS: &str = "alias/aws/ecr";

/// First byte of a KMS ciphertext: material sealed by Berth itself.
const FORMAT_LOCAL: u8 = 1;
/// First byte of a KMS ciphertext: a transit ciphertext follows.
const FORMAT_TRANSIT: u8 = 2;
/// Format byte, key id (16 bytes), material version (u32, big-endian).
const HEADER_LEN: usize = 1 + 16 + 4;

/// Purposes a KMS ciphertext is bound to, so one made for a data key of the
/// registry can never be decrypted through the KMS API, nor the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `KeyRing::wrap`: a data key of the registry.
    DataKey,
    /// KMS API Encrypt / GenerateDataKey, bound to an encryption context.
    Api,
}

/// The header of a KMS ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiphertextHeader {
    pub key_id: String,
    pub version: u32,
}

/// The header of `blob`, if it is shaped as a ciphertext of this service.
pub fn ciphertext_header(blob: &[u8]) -> Option<CiphertextHeader> {
    if blob.len() < HEADER_LEN + 1 || !matches!(blob[0], FORMAT_LOCAL | FORMAT_TRANSIT) {
        return None;
    }
    let id = uuid::Uuid::from_slice(&blob[1..17]).ok()?;
    let version = u32::from_be_bytes(blob[17..21].try_into().ok()?);
    Some(CiphertextHeader {
        key_id: id.hyphenated().to_string(),
        version,
    })
}

fn material_aad(key_id: &str, version: i64) -> String {
    format!("berth/kms-material\n{key_id}\n{version}")
}

fn cipher_aad(purpose: Purpose, key_id: &str, version: u32, context: &str) -> String {
    let p = match purpose {
        Purpose::DataKey => "dek",
        Purpose::Api => "api",
    };
    format!("berth/kms\n{p}\n{key_id}\n{version}\n{context}")
}

/// Whether a key's waiting period is over (or its material already destroyed).
pub fn is_deleted(row: &KmsKeyRow, now: i64) -> bool {
    row.destroyed_at.is_some()
        || (row.state == "PendingDeletion" && row.deletion_at.is_some_and(|d| d <= now))
}

impl KeyRing {
    pub fn new(meta: MetadataStore, master: MasterKey, region: &str) -> KeyRing {
        KeyRing {
            meta,
            master,
            region: region.to_string(),
            transit: None,
        }
    }

    /// Keep key-encryption keys in a transit engine instead (external custody).
    pub fn with_transit(mut self, transit: Transit) -> KeyRing {
        self.transit = Some(transit);
        self
    }

    /// Whether key material lives in an external transit engine.
    pub fn custody(&self) -> &'static str {
        if self.transit.is_some() {
            "transit"
        } else {
            "local"
        }
    }

    /// At startup: with transit custody, the engine answers and holds the
    /// server-managed key. A clear error otherwise, never a fallback.
    pub async fn check(&self) -> Result<(), KmsError> {
        if let Some(t) = &self.transit {
            t.check().await?;
        }
        Ok(())
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn key_arn(&self, account: &str, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{account}:key/{key_id}", self.region)
    }

    pub fn alias_arn(&self, account: &str, alias: &str) -> String {
        format!("arn:aws:kms:{}:{account}:{alias}", self.region)
    }

    /// The id of an account's AWS-managed `aws/ecr` key in this region:
    /// derived, so every node (and every repository created before the key
    /// existed) names the same one.
    pub fn managed_key_id(&self, account: &str) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("aws/ecr\n{}\n{account}", self.region));
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        // Shaped as a version-4 UUID, as KMS key ids are.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(b).hyphenated().to_string()
    }

    /// The key a repository's encryption settings name: `AES256` is the
    /// server-managed key; `KMS` (or `KMS_DSSE`) the key `kms_key` names in
    /// `account` (key id, key ARN, alias name or alias ARN), or the account's
    /// AWS-managed `aws/ecr` key when none is given.
    pub async fn repository_key(
        &self,
        account: &str,
        encryption_type: &str,
        kms_key: Option<&str>,
    ) -> Result<KeyRef, KmsError> {
        // KMS keys are the account's (in the home region), whichever
        // region's registry `account` keys.
        let account = crate::reference::key_account(account);
        match encryption_type {
            "AES256" => Ok(KeyRef::ServerManaged),
            _ => {
                let row = self
                    .resolve(account, kms_key.unwrap_or(MANAGED_ALIAS))
                    .await?;
                self.check_usable(&row).await?;
                Ok(KeyRef::Kms(row.arn))
            }
        }
    }

    /// The key `key` names in `account`: a key id, a key ARN, `alias/NAME`
    /// or an alias ARN. The AWS-managed `aws/ecr` key is created on first use.
    pub async fn resolve(&self, account: &str, key: &str) -> Result<KmsKeyRow, KmsError> {
        let not_found = || KmsError::NotFound(key.to_string());
        let (account, local) = match key.strip_prefix("arn:") {
            Some(rest) => {
                let parts: Vec<&str> = rest.splitn(5, ':').collect();
                let [_partition, service, region, acct, resource] = parts[..] else {
                    return Err(not_found());
                };
                if service != "kms" || region != self.region {
                    return Err(not_found());
                }
                (acct.to_string(), resource.to_string())
            }
            None => (account.to_string(), key.to_string()),
        };
        let managed = self.managed_key_id(&account);
        let key_id = if let Some(alias) = local.strip_prefix("alias/") {
            let name = format!("alias/{alias}");
            if name == MANAGED_ALIAS {
                managed.clone()
            } else {
                match self.meta.kms_alias(&account, &name).await? {
                    Some(a) => a.key_id,
                    None => {
                        return Err(KmsError::NotFound(format!(
                            "Alias {} is not found.",
                            self.alias_arn(&account, &name)
                        )));
                    }
                }
            }
        } else {
            let id = local.strip_prefix("key/").unwrap_or(&local);
            if key.starts_with("arn:") != local.starts_with("key/") {
                return Err(not_found());
            }
            id.to_string()
        };
        if key_id == managed {
            return self.ensure_managed_key(&account).await;
        }
        match self.meta.kms_key(&key_id).await? {
            Some(row) if row.account_id == account => Ok(row),
            _ => Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                self.key_arn(&account, &key_id)
            ))),
        }
    }

    /// Refuse a key that is disabled, pending deletion or deleted. A key
    /// whose waiting period has passed is destroyed here if the periodic job
    /// has not done it yet.
    pub async fn check_usable(&self, row: &KmsKeyRow) -> Result<(), KmsError> {
        if is_deleted(row, now_millis()) {
            if row.destroyed_at.is_none() {
                self.destroy(row).await?;
            }
            return Err(KmsError::Deleted(row.arn.clone()));
        }
        match row.state.as_str() {
            "Enabled" => Ok(()),
            "Disabled" => Err(KmsError::Disabled(row.arn.clone())),
            "PendingDeletion" => Err(KmsError::PendingDeletion(row.arn.clone())),
            other => Err(KmsError::InvalidState(format!(
                "{} is {other} and cannot be used.",
                row.arn
            ))),
        }
    }

    /// Destroy a deleted key's material (crypto-shredding): the transit key,
    /// or the sealed material rows.
    async fn destroy(&self, row: &KmsKeyRow) -> Result<(), KmsError> {
        if row.custody == "transit" {
            let t = self.transit_for(row)?;
            t.delete_key(&transit::key_name(&row.key_id)).await?;
        }
        self.meta.kms_destroy_key(&row.key_id).await?;
        tracing::info!(key = %row.arn, "KMS key deleted; its material is destroyed");
        Ok(())
    }

    fn transit_for(&self, row: &KmsKeyRow) -> Result<&Transit, KmsError> {
        self.transit.as_ref().ok_or_else(|| {
            KmsError::Unavailable(format!(
                "{} is held by a transit engine, and none is configured (kms_transit_url)",
                row.arn
            ))
        })
    }

    /// Encrypt `plaintext` under the newest material of `row` (usable, checked
    /// by the caller), bound to `purpose` and `context`.
    pub(crate) async fn encrypt_with(
        &self,
        row: &KmsKeyRow,
        plaintext: &[u8],
        purpose: Purpose,
        context: &str,
    ) -> Result<Vec<u8>, KmsError> {
        let id = uuid::Uuid::parse_str(&row.key_id)
            .map_err(|_| KmsError::InvalidState(format!("{} has a malformed key id", row.arn)))?;
        let latest = self
            .meta
            .kms_latest_material(&row.key_id)
            .await?
            .ok_or_else(|| KmsError::Deleted(row.arn.clone()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 64);
        if row.custody == "transit" {
            let t = self.transit_for(row)?;
            // Transit picks its newest version; the header records it.
            let probe = cipher_aad(purpose, &row.key_id, 0, context);
            let (ct, version) = t
                .encrypt(&transit::key_name(&row.key_id), plaintext, probe.as_bytes())
                .await?;
            out.push(FORMAT_TRANSIT);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(ct.as_bytes());
            return Ok(out);
        }
        let material = self.open_material(row, latest.version, latest.material.as_deref())?;
        let version = latest.version as u32;
        let sealer = MasterKey::from_bytes(&material);
        out.push(FORMAT_LOCAL);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&sealer.seal(
            plaintext,
            &cipher_aad(purpose, &row.key_id, version, context),
        ));
        Ok(out)
    }

    fn open_material(
        &self,
        row: &KmsKeyRow,
        version: i64,
        sealed: Option<&[u8]>,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, KmsError> {
        let sealed = sealed.ok_or_else(|| KmsError::Deleted(row.arn.clone()))?;
        let plain = zeroize::Zeroizing::new(
            self.master
                .unseal(sealed, &material_aad(&row.key_id, version))
                .map_err(|_| {
                    KmsError::InvalidState(format!(
                        "the material of {} cannot be unsealed with this server's master key",
                        row.arn
                    ))
                })?,
        );
        let arr: [u8; 32] = plain[..]
            .try_into()
            .map_err(|_| KmsError::InvalidCiphertext)?;
        Ok(zeroize::Zeroizing::new(arr))
    }

    /// Decrypt a ciphertext of `row` (usable, checked by the caller).
    pub(crate) async fn decrypt_with(
        &self,
        row: &KmsKeyRow,
        blob: &[u8],
        purpose: Purpose,
        context: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KmsError> {
        let header = ciphertext_header(blob).ok_or(KmsError::InvalidCiphertext)?;
        if header.key_id != row.key_id {
            return Err(KmsError::incorrect_key());
        }
        let body = &blob[HEADER_LEN..];
        match blob[0] {
            FORMAT_TRANSIT => {
                let t = self.transit_for(row)?;
                let ct = std::str::from_utf8(body).map_err(|_| KmsError::InvalidCiphertext)?;
                if transit::ciphertext_version(ct) != Some(header.version) {
                    return Err(KmsError::InvalidCiphertext);
                }
                let probe = cipher_aad(purpose, &row.key_id, 0, context);
                t.decrypt(&transit::key_name(&row.key_id), ct, probe.as_bytes())
                    .await?
                    .ok_or(KmsError::InvalidCiphertext)
            }
            _ => {
                let m = self
                    .meta
                    .kms_material(&row.key_id, i64::from(header.version))
                    .await?
                    .ok_or(KmsError::InvalidCiphertext)?;
                let material = self.open_material(row, m.version, m.material.as_deref())?;
                MasterKey::from_bytes(&material)
                    .unseal(
                        body,
                        &cipher_aad(purpose, &row.key_id, header.version, context),
                    )
                    .map(zeroize::Zeroizing::new)
                    .map_err(|_| KmsError::InvalidCiphertext)
            }
        }
    }

    /// The usable KMS key an ARN names (for wrap and unwrap).
    async fn usable_by_arn(&self, arn: &str) -> Result<KmsKeyRow, KmsError> {
        let row = self.resolve("", arn).await?;
        self.check_usable(&row).await?;
        Ok(row)
    }

    /// Wrap `dek` under `key`; `context` (what the key protects, e.g.
    /// `blob:<digest>`) is bound to the result, so a wrapped key cannot be
    /// moved to other data. A KMS wrap is self-describing (format, key id,
    /// material version, then the ciphertext), so rotation keeps it readable.
    pub async fn wrap(
        &self,
        key: &KeyRef,
        dek: &DataKey,
        context: &str,
    ) -> Result<Vec<u8>, KmsError> {
        match key {
            KeyRef::ServerManaged => {
                let aad = format!("{SERVER_WRAP}{context}");
                match &self.transit {
                    Some(t) => {
                        let (ct, _) = t
                            .encrypt(transit::SERVER_KEY, dek.bytes(), aad.as_bytes())
                            .await?;
                        Ok(ct.into_bytes())
                    }
                    None => Ok(self.master.seal(dek.bytes(), &aad)),
                }
            }
            KeyRef::Kms(arn) => {
                let row = self.usable_by_arn(arn).await?;
                self.encrypt_with(&row, dek.bytes(), Purpose::DataKey, context)
                    .await
            }
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
                let aad = format!("{SERVER_WRAP}{context}");
                // A transit wrap is its `vault:v…` ciphertext; anything else
                // was sealed with the master key (before transit custody).
                let plain = if wrapped.starts_with(b"vault:") {
                    let Some(t) = &self.transit else {
                        return Err(KmsError::Unavailable(
                            "this data key is held by a transit engine, and none is configured (kms_transit_url)"
                                .into(),
                        ));
                    };
                    let ct =
                        std::str::from_utf8(wrapped).map_err(|_| KmsError::InvalidCiphertext)?;
                    t.decrypt(transit::SERVER_KEY, ct, aad.as_bytes())
                        .await?
                        .ok_or(KmsError::InvalidCiphertext)?
                } else {
                    zeroize::Zeroizing::new(
                        self.master
                            .unseal(wrapped, &aad)
                            .map_err(|_| KmsError::InvalidCiphertext)?,
                    )
                };
                DataKey::from_bytes(&plain).ok_or(KmsError::InvalidCiphertext)
            }
            KeyRef::Kms(arn) => {
                let row = self.usable_by_arn(arn).await?;
                let plain = self
                    .decrypt_with(&row, wrapped, Purpose::DataKey, context)
                    .await
                    .map_err(|e| match e {
                        KmsError::IncorrectKey(_) => KmsError::InvalidCiphertext,
                        e => e,
                    })?;
                DataKey::from_bytes(&plain).ok_or(KmsError::InvalidCiphertext)
            }
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

    async fn ring(
        engine: crate::metadata::testing::Engine,
    ) -> (crate::metadata::testing::Fixture, KeyRing) {
        let fixture = crate::metadata::testing::Fixture::new(engine).await;
        let meta = fixture.open().await;
        let ring = KeyRing::new(meta, MasterKey::from_bytes(&[5; 32]), "us-east-1");
        (fixture, ring)
    }

    const ACCT: &str = "111122223333";

    async fn kms_keys_wrap_rotate_and_change_state(engine: crate::metadata::testing::Engine) {
        let (_fx, ring) = ring(engine).await;
        let key = ring.create_key(ACCT, &CreateKey::default()).await.unwrap();
        ring.create_alias(ACCT, "alias/app", &key.key_id)
            .await
            .unwrap();
        // Every way of naming the key resolves to it.
        for name in [
            key.key_id.clone(),
            key.arn.clone(),
            "alias/app".to_string(),
            ring.alias_arn(ACCT, "alias/app"),
        ] {
            let r = ring.repository_key(ACCT, "KMS", Some(&name)).await.unwrap();
            assert_eq!(r, KeyRef::Kms(key.arn.clone()), "{name}");
        }
        assert!(matches!(
            ring.repository_key("999999999999", "KMS", Some(&key.key_id))
                .await,
            Err(KmsError::NotFound(_))
        ));
        let kref = KeyRef::Kms(key.arn.clone());
        let dek = DataKey::generate();
        let w1 = ring.wrap(&kref, &dek, "blob:a").await.unwrap();
        assert_eq!(ciphertext_header(&w1).unwrap().version, 1);
        assert_eq!(
            ring.unwrap(&kref, &w1, "blob:a").await.unwrap().bytes(),
            dek.bytes()
        );
        assert!(matches!(
            ring.unwrap(&kref, &w1, "blob:b").await,
            Err(KmsError::InvalidCiphertext)
        ));
        let mut tampered = w1.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.unwrap(&kref, &tampered, "blob:a").await,
            Err(KmsError::InvalidCiphertext)
        ));
        // A data-key wrap is not an API ciphertext, and the reverse.
        assert!(matches!(
            ring.decrypt(&key, &w1, &[]).await,
            Err(KmsError::InvalidCiphertext)
        ));
        // Rotation: new wraps use version 2, version 1 still opens.
        ring.rotate_on_demand(ACCT, &key.key_id).await.unwrap();
        let w2 = ring.wrap(&kref, &dek, "blob:a").await.unwrap();
        assert_eq!(ciphertext_header(&w2).unwrap().version, 2);
        for w in [&w1, &w2] {
            assert_eq!(
                ring.unwrap(&kref, w, "blob:a").await.unwrap().bytes(),
                dek.bytes()
            );
        }
        let (_, rotations) = ring
            .list_rotations(ACCT, &key.key_id, None, 10)
            .await
            .unwrap();
        assert_eq!(rotations.items.len(), 1);
        // Disabled: neither wrap nor unwrap, until enabled again.
        ring.disable_key(ACCT, &key.key_id).await.unwrap();
        assert!(matches!(
            ring.unwrap(&kref, &w1, "blob:a").await,
            Err(KmsError::Disabled(_))
        ));
        assert!(matches!(
            ring.wrap(&kref, &dek, "x").await,
            Err(KmsError::Disabled(_))
        ));
        assert!(matches!(
            ring.repository_key(ACCT, "KMS", Some("alias/app")).await,
            Err(KmsError::Disabled(_))
        ));
        ring.enable_key(ACCT, &key.key_id).await.unwrap();
        ring.unwrap(&kref, &w1, "blob:a").await.unwrap();
        // Pending deletion, cancelled: back as Disabled.
        assert!(matches!(
            ring.schedule_deletion(ACCT, &key.key_id, Some(6)).await,
            Err(KmsError::Validation(_))
        ));
        ring.schedule_deletion(ACCT, &key.key_id, Some(7))
            .await
            .unwrap();
        assert!(matches!(
            ring.unwrap(&kref, &w1, "blob:a").await,
            Err(KmsError::PendingDeletion(_))
        ));
        let back = ring.cancel_deletion(ACCT, &key.key_id).await.unwrap();
        assert_eq!(back.state, "Disabled");
        ring.enable_key(ACCT, &key.key_id).await.unwrap();
        // Deleted once the waiting period is over: the material is destroyed.
        ring.schedule_deletion(ACCT, &key.key_id, Some(7))
            .await
            .unwrap();
        let mut row = ring.meta.kms_key(&key.key_id).await.unwrap().unwrap();
        row.deletion_at = Some(now_millis() - 1);
        assert!(
            ring.meta
                .kms_update_key(&row, "PendingDeletion")
                .await
                .unwrap()
        );
        assert!(matches!(
            ring.unwrap(&kref, &w1, "blob:a").await,
            Err(KmsError::Deleted(_))
        ));
        assert!(
            ring.meta
                .kms_materials(&key.key_id)
                .await
                .unwrap()
                .iter()
                .all(|m| m.material.is_none())
        );
        assert!(matches!(
            ring.describe(ACCT, &key.key_id).await,
            Err(KmsError::NotFound(_))
        ));
        assert!(matches!(
            ring.repository_key(ACCT, "KMS", Some("alias/app")).await,
            Err(KmsError::NotFound(_))
        ));
    }

    async fn managed_key_api_ciphertexts_and_the_periodic_job(
        engine: crate::metadata::testing::Engine,
    ) {
        let (_fx, ring) = ring(engine).await;
        // A KMS repository without a key gets aws/ecr, created once, stable.
        let a = ring.repository_key(ACCT, "KMS", None).await.unwrap();
        let b = ring
            .repository_key(ACCT, "KMS_DSSE", Some("alias/aws/ecr"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            KeyRef::Kms(ring.key_arn(ACCT, &ring.managed_key_id(ACCT)))
        );
        let managed = ring.describe(ACCT, "alias/aws/ecr").await.unwrap();
        assert_eq!(managed.manager, "AWS");
        assert!(matches!(
            ring.disable_key(ACCT, &managed.key_id).await,
            Err(KmsError::InvalidKeyUsage(_))
        ));
        assert!(matches!(
            ring.create_alias(ACCT, "alias/aws/mine", &managed.key_id)
                .await,
            Err(KmsError::InvalidAliasName(_))
        ));
        // API ciphertexts are bound to their encryption context.
        let key = ring.create_key(ACCT, &CreateKey::default()).await.unwrap();
        let ctx = vec![("purpose".to_string(), "test".to_string())];
        let ct = ring.encrypt(&key, b"hello", &ctx).await.unwrap();
        assert_eq!(&ring.decrypt(&key, &ct, &ctx).await.unwrap()[..], b"hello");
        assert!(matches!(
            ring.decrypt(&key, &ct, &[]).await,
            Err(KmsError::InvalidCiphertext)
        ));
        assert!(matches!(
            ring.decrypt(&managed, &ct, &ctx).await,
            Err(KmsError::IncorrectKey(_))
        ));
        assert_eq!(ring.ciphertext_key(&ct).await.unwrap().key_id, key.key_id);
        let pair = ring.generate_data_key(&key, 32, &ctx).await.unwrap();
        assert_eq!(
            &ring.decrypt(&key, &pair.ciphertext, &ctx).await.unwrap()[..],
            &pair.plaintext[..]
        );
        // The periodic job destroys keys whose waiting period is over.
        ring.schedule_deletion(ACCT, &key.key_id, None)
            .await
            .unwrap();
        let mut row = ring.meta.kms_key(&key.key_id).await.unwrap().unwrap();
        row.deletion_at = Some(now_millis() - 1);
        ring.meta
            .kms_update_key(&row, "PendingDeletion")
            .await
            .unwrap();
        assert_eq!(ring.run_due().await.unwrap().0, 1);
        assert!(
            ring.meta
                .kms_key(&key.key_id)
                .await
                .unwrap()
                .unwrap()
                .destroyed_at
                .is_some()
        );
        assert!(matches!(
            ring.decrypt(&row, &ct, &ctx).await,
            Err(KmsError::Deleted(_))
        ));
        let listed = ring.list_keys(ACCT, None, 10).await.unwrap();
        assert_eq!(listed.items.len(), 1, "only aws/ecr is left");
    }

    use crate::metadata::testing::Engine;
    crate::metadata::testing::on_both_engines!(
        kms_keys_wrap_rotate_and_change_state,
        managed_key_api_ciphertexts_and_the_periodic_job
    );
}
