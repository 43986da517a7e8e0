//! The rules of the KMS API's operations: creating keys, their state
//! machine (Enabled ⇄ Disabled, → PendingDeletion → deleted), rotation,
//! aliases, tags, key policies, grants, and encryption for callers of the
//! API. The face (`kms_api`) parses and shapes; everything decided is here.

use serde_json::{Value, json};

use super::{KeyRing, KmsError, MANAGED_ALIAS, Purpose, ciphertext_header, is_deleted, transit};
use crate::metadata::{KmsAliasRow, KmsGrantRow, KmsKeyRow, KmsMaterialRow, now_millis};
use crate::secrets::random_bytes;

/// KMS's default automatic rotation period.
pub const ROTATION_PERIOD_DEFAULT_DAYS: i64 = 365;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// KMS's limit of on-demand rotations per key.
const MAX_ON_DEMAND_ROTATIONS: usize = 10;
/// Most grants per key (KMS: 50,000).
const MAX_GRANTS_PER_PAGE_SCAN: i64 = 50_000;

/// What CreateKey asks for (validated on the wire by the face).
#[derive(Clone, Debug, Default)]
pub struct CreateKey {
    pub description: String,
    pub key_usage: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub policy: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// A page of a listing and the marker of the next one.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_marker: Option<String>,
}

/// What GenerateDataKey returns: the plaintext key and it encrypted.
pub struct DataKeyPair {
    pub plaintext: zeroize::Zeroizing<Vec<u8>>,
    pub ciphertext: Vec<u8>,
    pub key_arn: String,
}

/// The default key policy: the account's root, so IAM policies decide.
pub fn default_policy(account: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*",
        }],
    })
    .to_string()
}

/// The canonical text of an encryption context (sorted by key), the
/// associated data of an API ciphertext.
pub fn canonical_context(ctx: &[(String, String)]) -> String {
    let mut v: Vec<&(String, String)> = ctx.iter().collect();
    v.sort();
    let map: serde_json::Map<String, Value> = v
        .into_iter()
        .map(|(k, val)| (k.clone(), Value::String(val.clone())))
        .collect();
    Value::Object(map).to_string()
}

fn page<T: Clone>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_marker = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&key)
    } else {
        None
    };
    Page {
        items: rows,
        next_marker,
    }
}

fn new_key_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

fn token() -> String {
    let mut b = [0u8; 48];
    random_bytes(&mut b);
    hex::encode(b)
}

impl KeyRing {
    /// Seal fresh material for version `version` of `key_id` (local custody).
    fn new_material(&self, key_id: &str, version: i64) -> Vec<u8> {
        let mut m = zeroize::Zeroizing::new([0u8; 32]);
        random_bytes(&mut m[..]);
        self.master
            .seal(&m[..], &super::material_aad(key_id, version))
    }

    fn key_row(&self, account: &str, key_id: &str, manager: &str, req: &CreateKey) -> KmsKeyRow {
        let now = now_millis();
        KmsKeyRow {
            key_id: key_id.to_string(),
            account_id: account.to_string(),
            arn: self.key_arn(account, key_id),
            description: req.description.clone(),
            key_usage: req
                .key_usage
                .clone()
                .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
            key_spec: req
                .key_spec
                .clone()
                .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
            origin: req.origin.clone().unwrap_or_else(|| "AWS_KMS".into()),
            manager: manager.to_string(),
            state: "Enabled".into(),
            created_at: now,
            deletion_at: None,
            pending_window_days: None,
            destroyed_at: None,
            // AWS-managed keys rotate every year, and that cannot be changed.
            rotation_enabled: manager == "AWS",
            rotation_period_days: ROTATION_PERIOD_DEFAULT_DAYS,
            next_rotation_at: (manager == "AWS")
                .then_some(now + ROTATION_PERIOD_DEFAULT_DAYS * DAY_MS),
            policy: req
                .policy
                .clone()
                .unwrap_or_else(|| default_policy(account)),
            custody: self.custody().to_string(),
        }
    }

    /// Create the first material of a new key where its custody keeps it.
    async fn first_material(&self, key_id: &str) -> Result<Option<Vec<u8>>, KmsError> {
        match &self.transit {
            Some(t) => {
                t.create_key(&transit::key_name(key_id)).await?;
                Ok(None)
            }
            None => Ok(Some(self.new_material(key_id, 1))),
        }
    }

    /// CreateKey: a symmetric encryption key of `account`.
    pub async fn create_key(&self, account: &str, req: &CreateKey) -> Result<KmsKeyRow, KmsError> {
        match req.key_usage.as_deref() {
            None | Some("ENCRYPT_DECRYPT") => {}
            Some(u) => {
                return Err(KmsError::Validation(format!(
                    "KeyUsage {u} is not supported by Berth; only ENCRYPT_DECRYPT (symmetric) keys"
                )));
            }
        }
        match req.key_spec.as_deref() {
            None | Some("SYMMETRIC_DEFAULT") => {}
            Some(s) => {
                return Err(KmsError::Validation(format!(
                    "KeySpec {s} is not supported by Berth; only SYMMETRIC_DEFAULT"
                )));
            }
        }
        match req.origin.as_deref() {
            None | Some("AWS_KMS") => {}
            Some(o) => {
                return Err(KmsError::Validation(format!(
                    "Origin {o} is not supported by Berth; only AWS_KMS"
                )));
            }
        }
        if let Some(p) = &req.policy {
            check_policy(p)?;
        }
        let key_id = new_key_id();
        let row = self.key_row(account, &key_id, "CUSTOMER", req);
        let material = self.first_material(&key_id).await?;
        if !self
            .meta
            .kms_create_key(&row, material.as_deref(), &req.tags, None)
            .await?
        {
            return Err(KmsError::AlreadyExists(format!(
                "Key {} already exists",
                row.arn
            )));
        }
        Ok(row)
    }

    /// The account's AWS-managed `aws/ecr` key, created (with its alias) on first use.
    pub(super) async fn ensure_managed_key(&self, account: &str) -> Result<KmsKeyRow, KmsError> {
        let key_id = self.managed_key_id(account);
        if let Some(row) = self.meta.kms_key(&key_id).await? {
            return Ok(row);
        }
        let req = CreateKey {
            description: "Default key that protects my ECR data when no other key is defined"
                .into(),
            ..CreateKey::default()
        };
        let row = self.key_row(account, &key_id, "AWS", &req);
        let material = self.first_material(&key_id).await?;
        // Another node may have created it at the same moment: either way it exists.
        self.meta
            .kms_create_key(&row, material.as_deref(), &[], Some(MANAGED_ALIAS))
            .await?;
        self.meta
            .kms_key(&key_id)
            .await?
            .ok_or_else(|| KmsError::NotFound(self.key_arn(account, &key_id)))
    }

    /// A key of the API: resolved in `account`; a deleted key is not found
    /// (as in KMS, once its waiting period is over).
    pub async fn describe(&self, account: &str, key: &str) -> Result<KmsKeyRow, KmsError> {
        let row = self.resolve(account, key).await?;
        if is_deleted(&row, now_millis()) {
            if row.destroyed_at.is_none() {
                self.destroy(&row).await?;
            }
            return Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                row.arn
            )));
        }
        Ok(row)
    }

    /// Refuse operations on AWS-managed keys that KMS refuses.
    fn customer_managed(row: &KmsKeyRow, what: &str) -> Result<(), KmsError> {
        if row.manager == "AWS" {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{what} is not allowed on the AWS managed key {}",
                row.arn
            )));
        }
        Ok(())
    }

    async fn transition(&self, row: &KmsKeyRow, to: KmsKeyRow) -> Result<KmsKeyRow, KmsError> {
        if !self.meta.kms_update_key(&to, &row.state).await? {
            return Err(KmsError::InvalidState(format!(
                "{} was changed by another request; retry",
                row.arn
            )));
        }
        Ok(to)
    }

    pub async fn list_keys(
        &self,
        account: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KmsKeyRow>, KmsError> {
        let rows = self
            .meta
            .kms_list_keys(account, marker.unwrap_or(""), limit as i64 + 1)
            .await?;
        // Paged before deleted keys are left out, so a page of them cannot end the listing.
        let now = now_millis();
        let mut p = page(rows, limit, |r: &KmsKeyRow| r.key_id.clone());
        p.items.retain(|r| !is_deleted(r, now));
        Ok(p)
    }

    pub async fn enable_key(&self, account: &str, key: &str) -> Result<(), KmsError> {
        self.set_enabled(account, key, "EnableKey", true).await
    }

    pub async fn disable_key(&self, account: &str, key: &str) -> Result<(), KmsError> {
        self.set_enabled(account, key, "DisableKey", false).await
    }

    /// EnableKey / DisableKey: move a customer-managed key between `Enabled`
    /// and `Disabled` (nothing to do if it is there already); a key pending
    /// deletion is refused.
    async fn set_enabled(
        &self,
        account: &str,
        key: &str,
        what: &str,
        enabled: bool,
    ) -> Result<(), KmsError> {
        let (from, to_state) = if enabled {
            ("Disabled", "Enabled")
        } else {
            ("Enabled", "Disabled")
        };
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, what)?;
        if row.state == to_state {
            Ok(())
        } else if row.state == from {
            let to = KmsKeyRow {
                state: to_state.into(),
                ..row.clone()
            };
            self.transition(&row, to).await.map(|_| ())
        } else {
            Err(Self::pending_deletion(&row))
        }
    }

    /// ScheduleKeyDeletion: 7 to 30 days (default 30).
    pub async fn schedule_deletion(
        &self,
        account: &str,
        key: &str,
        days: Option<i64>,
    ) -> Result<KmsKeyRow, KmsError> {
        let days = days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value between 7 and 30"
            )));
        }
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "ScheduleKeyDeletion")?;
        Self::not_pending_deletion(&row)?;
        let to = KmsKeyRow {
            state: "PendingDeletion".into(),
            deletion_at: Some(now_millis() + days * DAY_MS),
            pending_window_days: Some(days),
            ..row.clone()
        };
        self.transition(&row, to).await
    }

    /// CancelKeyDeletion: the key comes back Disabled, as in KMS.
    pub async fn cancel_deletion(&self, account: &str, key: &str) -> Result<KmsKeyRow, KmsError> {
        let row = self.describe(account, key).await?;
        if row.state != "PendingDeletion" {
            return Err(KmsError::InvalidState(format!(
                "{} is not pending deletion.",
                row.arn
            )));
        }
        let to = KmsKeyRow {
            state: "Disabled".into(),
            deletion_at: None,
            pending_window_days: None,
            ..row.clone()
        };
        self.transition(&row, to).await
    }

    fn must_be_enabled(row: &KmsKeyRow) -> Result<(), KmsError> {
        match row.state.as_str() {
            "Enabled" => Ok(()),
            "Disabled" => Err(KmsError::Disabled(row.arn.clone())),
            _ => Err(Self::pending_deletion(row)),
        }
    }

    /// The error for an operation a key pending deletion does not allow.
    fn pending_deletion(row: &KmsKeyRow) -> KmsError {
        KmsError::InvalidState(format!("{} is pending deletion.", row.arn))
    }

    /// Refuse a key pending deletion.
    fn not_pending_deletion(row: &KmsKeyRow) -> Result<(), KmsError> {
        if row.state == "PendingDeletion" {
            return Err(Self::pending_deletion(row));
        }
        Ok(())
    }

    /// EnableKeyRotation (period 90..2560 days, default 365).
    pub async fn enable_rotation(
        &self,
        account: &str,
        key: &str,
        period_days: Option<i64>,
    ) -> Result<(), KmsError> {
        let period = period_days.unwrap_or(ROTATION_PERIOD_DEFAULT_DAYS);
        if !(90..=2560).contains(&period) {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{period}' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value between 90 and 2560"
            )));
        }
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "EnableKeyRotation")?;
        Self::must_be_enabled(&row)?;
        let to = KmsKeyRow {
            rotation_enabled: true,
            rotation_period_days: period,
            next_rotation_at: Some(now_millis() + period * DAY_MS),
            ..row.clone()
        };
        self.transition(&row, to).await.map(|_| ())
    }

    pub async fn disable_rotation(&self, account: &str, key: &str) -> Result<(), KmsError> {
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "DisableKeyRotation")?;
        Self::must_be_enabled(&row)?;
        let to = KmsKeyRow {
            rotation_enabled: false,
            next_rotation_at: None,
            ..row.clone()
        };
        self.transition(&row, to).await.map(|_| ())
    }

    /// Add a material version: new encryptions use it, older ones stay.
    async fn rotate(&self, row: &KmsKeyRow, rotation_type: &str) -> Result<(), KmsError> {
        let latest = self
            .meta
            .kms_latest_material(&row.key_id)
            .await?
            .map_or(0, |m| m.version);
        let next = row
            .rotation_enabled
            .then(|| now_millis() + row.rotation_period_days * DAY_MS);
        let (version, material) = match &self.transit {
            Some(t) if row.custody == "transit" => {
                let v = t.rotate(&transit::key_name(&row.key_id)).await?;
                (i64::from(v), None)
            }
            _ if row.custody == "transit" => {
                return Err(self.transit_for(row).unwrap_err());
            }
            _ => (latest + 1, Some(self.new_material(&row.key_id, latest + 1))),
        };
        if !self
            .meta
            .kms_add_material(
                &row.key_id,
                version,
                material.as_deref(),
                rotation_type,
                next,
            )
            .await?
        {
            return Err(KmsError::InvalidState(format!(
                "{} is being rotated by another request; retry",
                row.arn
            )));
        }
        Ok(())
    }

    /// RotateKeyOnDemand.
    pub async fn rotate_on_demand(&self, account: &str, key: &str) -> Result<KmsKeyRow, KmsError> {
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "RotateKeyOnDemand")?;
        Self::must_be_enabled(&row)?;
        let on_demand = self
            .meta
            .kms_materials(&row.key_id)
            .await?
            .iter()
            .filter(|m| m.rotation_type == "ON_DEMAND")
            .count();
        if on_demand >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "{} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations",
                row.arn
            )));
        }
        self.rotate(&row, "ON_DEMAND").await?;
        Ok(row)
    }

    /// The rotations of a key (its material versions after the first).
    pub async fn list_rotations(
        &self,
        account: &str,
        key: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(KmsKeyRow, Page<KmsMaterialRow>), KmsError> {
        let row = self.describe(account, key).await?;
        let after: i64 = match marker {
            Some(m) => m
                .parse()
                .map_err(|_| KmsError::Validation("Invalid Marker".into()))?,
            None => 1,
        };
        let rows: Vec<KmsMaterialRow> = self
            .meta
            .kms_materials(&row.key_id)
            .await?
            .into_iter()
            .filter(|m| m.version > after)
            .take(limit + 1)
            .collect();
        Ok((
            row,
            page(rows, limit, |m: &KmsMaterialRow| m.version.to_string()),
        ))
    }

    /// The periodic job: destroy keys whose waiting period is over, and run
    /// due automatic rotations. How many of each.
    pub async fn run_due(&self) -> Result<(usize, usize), KmsError> {
        let now = now_millis();
        let mut deleted = 0;
        for id in self.meta.kms_keys_due_for_deletion(now).await? {
            if let Some(row) = self.meta.kms_key(&id).await? {
                self.destroy(&row).await?;
                deleted += 1;
            }
        }
        let mut rotated = 0;
        for id in self.meta.kms_keys_due_for_rotation(now).await? {
            if let Some(row) = self.meta.kms_key(&id).await? {
                match self.rotate(&row, "AUTOMATIC").await {
                    Ok(()) => rotated += 1,
                    Err(KmsError::InvalidState(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((deleted, rotated))
    }

    // ---- aliases ----------------------------------------------------------

    fn check_alias_name(name: &str) -> Result<(), KmsError> {
        let Some(rest) = name.strip_prefix("alias/") else {
            return Err(KmsError::Validation(format!(
                "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html (got {name})"
            )));
        };
        if rest.is_empty()
            || name.len() > 256
            || !rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
        {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
            )));
        }
        if rest.starts_with("aws/") {
            return Err(KmsError::InvalidAliasName(
                "Alias must not begin with 'alias/aws/'; that prefix is reserved for AWS managed keys"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The target key of an alias: a customer-managed key, named by id or ARN.
    async fn alias_target(&self, account: &str, target: &str) -> Result<KmsKeyRow, KmsError> {
        if target.starts_with("alias/") || target.contains(":alias/") {
            return Err(KmsError::Validation(
                "An alias must point to a key id or key ARN, not to another alias".into(),
            ));
        }
        let row = self.describe(account, target).await?;
        if row.account_id != account {
            return Err(KmsError::NotFound(format!("Key '{target}' does not exist")));
        }
        Self::customer_managed(&row, "Pointing an alias at a key")?;
        Self::not_pending_deletion(&row)?;
        Ok(row)
    }

    pub async fn create_alias(
        &self,
        account: &str,
        name: &str,
        target: &str,
    ) -> Result<(), KmsError> {
        Self::check_alias_name(name)?;
        let row = self.alias_target(account, target).await?;
        if !self
            .meta
            .kms_create_alias(account, name, &row.key_id)
            .await?
        {
            return Err(KmsError::AlreadyExists(format!(
                "An alias with the name {} already exists",
                self.alias_arn(account, name)
            )));
        }
        Ok(())
    }

    pub async fn update_alias(
        &self,
        account: &str,
        name: &str,
        target: &str,
    ) -> Result<(), KmsError> {
        Self::check_alias_name(name)?;
        let row = self.alias_target(account, target).await?;
        if !self
            .meta
            .kms_update_alias(account, name, &row.key_id)
            .await?
        {
            return Err(KmsError::NotFound(format!(
                "Alias {} is not found.",
                self.alias_arn(account, name)
            )));
        }
        Ok(())
    }

    pub async fn delete_alias(&self, account: &str, name: &str) -> Result<(), KmsError> {
        Self::check_alias_name(name)?;
        if !self.meta.kms_delete_alias(account, name).await? {
            return Err(KmsError::NotFound(format!(
                "Alias {} is not found.",
                self.alias_arn(account, name)
            )));
        }
        Ok(())
    }

    /// The key an alias points to, if it exists (without creating `aws/ecr`).
    pub async fn alias_key(&self, account: &str, name: &str) -> Result<Option<String>, KmsError> {
        Ok(self.meta.kms_alias(account, name).await?.map(|a| a.key_id))
    }

    pub async fn list_aliases(
        &self,
        account: &str,
        key: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<KmsAliasRow>, KmsError> {
        let key_id = match key {
            Some(k) => Some(self.describe(account, k).await?.key_id),
            None => None,
        };
        let rows = self
            .meta
            .kms_list_aliases(
                account,
                key_id.as_deref(),
                marker.unwrap_or(""),
                limit as i64 + 1,
            )
            .await?;
        Ok(page(rows, limit, |a: &KmsAliasRow| a.alias_name.clone()))
    }

    // ---- tags -------------------------------------------------------------

    pub async fn tag_key(
        &self,
        account: &str,
        key: &str,
        tags: &[(String, String)],
    ) -> Result<(), KmsError> {
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "TagResource")?;
        for (k, _) in tags {
            if k.starts_with("aws:") {
                return Err(KmsError::Tag(format!(
                    "Tag keys must not begin with 'aws:' (got {k})"
                )));
            }
        }
        let existing = self.meta.kms_key_tags(&row.key_id, "", 51).await?;
        let mut names: std::collections::HashSet<&str> =
            existing.iter().map(|(k, _)| k.as_str()).collect();
        names.extend(tags.iter().map(|(k, _)| k.as_str()));
        if names.len() > 50 {
            return Err(KmsError::Tag("A key can have at most 50 tags".into()));
        }
        self.meta.kms_tag_key(&row.key_id, tags).await?;
        Ok(())
    }

    pub async fn untag_key(
        &self,
        account: &str,
        key: &str,
        keys: &[String],
    ) -> Result<(), KmsError> {
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "UntagResource")?;
        self.meta.kms_untag_key(&row.key_id, keys).await?;
        Ok(())
    }

    pub async fn list_tags(
        &self,
        account: &str,
        key: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, String)>, KmsError> {
        let row = self.describe(account, key).await?;
        let rows = self
            .meta
            .kms_key_tags(&row.key_id, marker.unwrap_or(""), limit as i64 + 1)
            .await?;
        Ok(page(rows, limit, |(k, _): &(String, String)| k.clone()))
    }

    // ---- policies ---------------------------------------------------------

    pub async fn put_policy(&self, account: &str, key: &str, policy: &str) -> Result<(), KmsError> {
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "PutKeyPolicy")?;
        check_policy(policy)?;
        let to = KmsKeyRow {
            policy: policy.to_string(),
            ..row.clone()
        };
        self.transition(&row, to).await.map(|_| ())
    }

    /// UpdateKeyDescription.
    pub async fn update_description(
        &self,
        account: &str,
        key: &str,
        description: &str,
    ) -> Result<(), KmsError> {
        if description.len() > 8192 {
            return Err(KmsError::Validation(
                "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192".into(),
            ));
        }
        let row = self.describe(account, key).await?;
        Self::customer_managed(&row, "UpdateKeyDescription")?;
        let to = KmsKeyRow {
            description: description.to_string(),
            ..row.clone()
        };
        self.transition(&row, to).await.map(|_| ())
    }

    // ---- grants -----------------------------------------------------------

    /// CreateGrant: the grant id and token.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_grant(
        &self,
        account: &str,
        key: &str,
        issuer: &str,
        grantee: &str,
        retiring: Option<&str>,
        operations: &[String],
        constraints: Option<Value>,
        name: Option<&str>,
    ) -> Result<(String, String), KmsError> {
        let row = self.describe(account, key).await?;
        Self::not_pending_deletion(&row)?;
        if operations.is_empty() {
            return Err(KmsError::Validation(
                "1 validation error detected: Value null at 'operations' failed to satisfy constraint: Member must not be null".into(),
            ));
        }
        // A grant of the same name, grantee and operations is returned again (idempotent).
        if let Some(n) = name {
            for g in self
                .meta
                .kms_list_grants(&row.key_id, "", MAX_GRANTS_PER_PAGE_SCAN)
                .await?
            {
                if g.name.as_deref() == Some(n)
                    && g.grantee_principal == grantee
                    && serde_json::from_str::<Value>(&g.operations).ok() == Some(json!(operations))
                {
                    return Ok((g.grant_id, g.grant_token));
                }
            }
        }
        let mut id = [0u8; 32];
        random_bytes(&mut id);
        let grant = KmsGrantRow {
            grant_id: hex::encode(id),
            key_id: row.key_id.clone(),
            name: name.map(str::to_string),
            grantee_principal: grantee.to_string(),
            retiring_principal: retiring.map(str::to_string),
            issuing_account: issuer.to_string(),
            operations: json!(operations).to_string(),
            constraints: constraints.map(|c| c.to_string()),
            grant_token: token(),
            created_at: now_millis(),
        };
        self.meta.kms_create_grant(&grant).await?;
        Ok((grant.grant_id, grant.grant_token))
    }

    pub async fn list_grants(
        &self,
        account: &str,
        key: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(KmsKeyRow, Page<KmsGrantRow>), KmsError> {
        let row = self.describe(account, key).await?;
        let rows = self
            .meta
            .kms_list_grants(&row.key_id, marker.unwrap_or(""), limit as i64 + 1)
            .await?;
        Ok((row, page(rows, limit, |g: &KmsGrantRow| g.grant_id.clone())))
    }

    pub async fn revoke_grant(
        &self,
        account: &str,
        key: &str,
        grant_id: &str,
    ) -> Result<(), KmsError> {
        let row = self.describe(account, key).await?;
        if !self.meta.kms_delete_grant(&row.key_id, grant_id).await? {
            return Err(KmsError::InvalidGrantId(format!(
                "Grant ID {grant_id} is not valid for {}",
                row.arn
            )));
        }
        Ok(())
    }

    /// The grant a RetireGrant names (by token, or by key and grant id).
    pub async fn find_grant(
        &self,
        account: &str,
        token: Option<&str>,
        key_and_id: Option<(&str, &str)>,
    ) -> Result<(KmsKeyRow, KmsGrantRow), KmsError> {
        if let Some(t) = token {
            let g = self
                .meta
                .kms_grant_by_token(t)
                .await?
                .ok_or_else(|| KmsError::InvalidGrantToken("Invalid grant token".into()))?;
            let row = self
                .meta
                .kms_key(&g.key_id)
                .await?
                .ok_or_else(|| KmsError::InvalidGrantToken("Invalid grant token".into()))?;
            return Ok((row, g));
        }
        let Some((key, id)) = key_and_id else {
            return Err(KmsError::Validation(
                "RetireGrant needs a GrantToken, or both KeyId and GrantId".into(),
            ));
        };
        let row = self.describe(account, key).await?;
        let g = self
            .meta
            .kms_list_grants(&row.key_id, "", MAX_GRANTS_PER_PAGE_SCAN)
            .await?
            .into_iter()
            .find(|g| g.grant_id == id)
            .ok_or_else(|| KmsError::InvalidGrantId(format!("Grant ID {id} is not valid")))?;
        Ok((row, g))
    }

    pub async fn delete_grant(&self, row: &KmsKeyRow, grant_id: &str) -> Result<(), KmsError> {
        self.meta.kms_delete_grant(&row.key_id, grant_id).await?;
        Ok(())
    }

    /// ECR's grant on the key of a repository created with KMS encryption:
    /// the ECR service may use the key for the repository's data (as
    /// `CreateRepository` does in AWS; ListGrants shows it).
    pub async fn grant_for_repository(
        &self,
        account: &str,
        key_arn: &str,
        repository_arn: &str,
    ) -> Result<(), KmsError> {
        let ops: Vec<String> = [
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "ReEncryptFrom",
            "ReEncryptTo",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.create_grant(
            account,
            key_arn,
            &format!("arn:aws:iam::{account}:root"),
            "ecr.amazonaws.com",
            Some("ecr.amazonaws.com"),
            &ops,
            Some(json!({"EncryptionContextSubset": {"aws:ecr:arn": repository_arn}})),
            Some(&format!("ecr:{repository_arn}")),
        )
        .await
        .map(|_| ())
    }

    /// Retire the grant [`KeyRing::grant_for_repository`] made (DeleteRepository).
    pub async fn retire_repository_grant(
        &self,
        account: &str,
        key_arn: &str,
        repository_arn: &str,
    ) -> Result<(), KmsError> {
        let row = match self.describe(account, key_arn).await {
            Ok(r) => r,
            // A deleted key took its grants with it.
            Err(KmsError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let name = format!("ecr:{repository_arn}");
        for g in self
            .meta
            .kms_list_grants(&row.key_id, "", MAX_GRANTS_PER_PAGE_SCAN)
            .await?
        {
            if g.name.as_deref() == Some(name.as_str()) {
                self.meta.kms_delete_grant(&row.key_id, &g.grant_id).await?;
            }
        }
        Ok(())
    }

    // ---- encryption for API callers -----------------------------------------

    /// Encrypt (at most 4096 bytes) under `row` (usable), bound to `context`.
    pub async fn encrypt(
        &self,
        row: &KmsKeyRow,
        plaintext: &[u8],
        context: &[(String, String)],
    ) -> Result<Vec<u8>, KmsError> {
        self.check_usable(row).await?;
        self.encrypt_with(row, plaintext, Purpose::Api, &canonical_context(context))
            .await
    }

    /// The key a ciphertext of the API names (for authorization before decrypting).
    pub async fn ciphertext_key(&self, blob: &[u8]) -> Result<KmsKeyRow, KmsError> {
        let h = ciphertext_header(blob).ok_or(KmsError::InvalidCiphertext)?;
        self.meta
            .kms_key(&h.key_id)
            .await?
            .ok_or(KmsError::InvalidCiphertext)
    }

    /// Decrypt a ciphertext of `row` made with the same `context`.
    pub async fn decrypt(
        &self,
        row: &KmsKeyRow,
        blob: &[u8],
        context: &[(String, String)],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KmsError> {
        self.check_usable(row).await?;
        self.decrypt_with(row, blob, Purpose::Api, &canonical_context(context))
            .await
    }

    /// GenerateDataKey: `bytes` random bytes and them encrypted under `row`.
    pub async fn generate_data_key(
        &self,
        row: &KmsKeyRow,
        bytes: usize,
        context: &[(String, String)],
    ) -> Result<DataKeyPair, KmsError> {
        let mut plain = zeroize::Zeroizing::new(vec![0u8; bytes]);
        random_bytes(&mut plain);
        let ciphertext = self.encrypt(row, &plain, context).await?;
        Ok(DataKeyPair {
            plaintext: plain,
            ciphertext,
            key_arn: row.arn.clone(),
        })
    }
}

/// A key policy must parse as a policy document naming KMS actions.
pub fn check_policy(text: &str) -> Result<(), KmsError> {
    if text.len() > 32_768 {
        return Err(KmsError::LimitExceeded(
            "The key policy is larger than 32768 bytes".into(),
        ));
    }
    crate::iam::Policy::parse(text, crate::iam::PolicyKind::Key)
        .map(|_| ())
        .map_err(|e| KmsError::MalformedPolicy(format!("The key policy is malformed: {e}")))
}
