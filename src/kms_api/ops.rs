//! The KMS operations: members in, shapes out (botocore's `kms/2014-11-01`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::{Ctx, KmsApiError};
use crate::kms::{AliasView, CreateKey, GrantView, KeyView, Page, RotationView};

/// Every operation Berth answers, with its metrics label.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("CreateKey", "kms:CreateKey"),
    ("DescribeKey", "kms:DescribeKey"),
    ("ListKeys", "kms:ListKeys"),
    ("CreateAlias", "kms:CreateAlias"),
    ("ListAliases", "kms:ListAliases"),
    ("DeleteAlias", "kms:DeleteAlias"),
    ("UpdateAlias", "kms:UpdateAlias"),
    ("EnableKey", "kms:EnableKey"),
    ("DisableKey", "kms:DisableKey"),
    ("ScheduleKeyDeletion", "kms:ScheduleKeyDeletion"),
    ("CancelKeyDeletion", "kms:CancelKeyDeletion"),
    ("EnableKeyRotation", "kms:EnableKeyRotation"),
    ("DisableKeyRotation", "kms:DisableKeyRotation"),
    ("GetKeyRotationStatus", "kms:GetKeyRotationStatus"),
    ("RotateKeyOnDemand", "kms:RotateKeyOnDemand"),
    ("ListKeyRotations", "kms:ListKeyRotations"),
    ("GenerateDataKey", "kms:GenerateDataKey"),
    (
        "GenerateDataKeyWithoutPlaintext",
        "kms:GenerateDataKeyWithoutPlaintext",
    ),
    ("Encrypt", "kms:Encrypt"),
    ("Decrypt", "kms:Decrypt"),
    ("ReEncrypt", "kms:ReEncrypt"),
    ("TagResource", "kms:TagResource"),
    ("UntagResource", "kms:UntagResource"),
    ("ListResourceTags", "kms:ListResourceTags"),
    ("UpdateKeyDescription", "kms:UpdateKeyDescription"),
    ("GetKeyPolicy", "kms:GetKeyPolicy"),
    ("PutKeyPolicy", "kms:PutKeyPolicy"),
    ("CreateGrant", "kms:CreateGrant"),
    ("ListGrants", "kms:ListGrants"),
    ("RetireGrant", "kms:RetireGrant"),
    ("RevokeGrant", "kms:RevokeGrant"),
];

/// An operation's input members.
pub struct Input(pub Map<String, Value>);

fn not_null(member: &str) -> KmsApiError {
    KmsApiError::validation(format!(
        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
        lower_first(member)
    ))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn serialization(member: &str, what: &str) -> KmsApiError {
    KmsApiError::new(
        "SerializationException",
        400,
        format!("{member} must be {what}"),
    )
}

impl Input {
    fn opt_str(&self, m: &str) -> Result<Option<&str>, KmsApiError> {
        match self.0.get(m) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(serialization(m, "a string")),
        }
    }

    fn str(&self, m: &str) -> Result<&str, KmsApiError> {
        self.opt_str(m)?.ok_or_else(|| not_null(m))
    }

    /// A key id, ARN or alias member (1..2048 characters).
    fn key(&self, m: &str) -> Result<&str, KmsApiError> {
        let k = self.str(m)?;
        if k.is_empty() || k.len() > 2048 {
            return Err(KmsApiError::validation(format!(
                "1 validation error detected: Value at '{}' failed to satisfy constraint: Member must have length between 1 and 2048",
                lower_first(m)
            )));
        }
        Ok(k)
    }

    fn opt_i64(&self, m: &str) -> Result<Option<i64>, KmsApiError> {
        match self.0.get(m) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| serialization(m, "an integer")),
            Some(_) => Err(serialization(m, "an integer")),
        }
    }

    fn blob(&self, m: &str) -> Result<Vec<u8>, KmsApiError> {
        let s = self.str(m)?;
        STANDARD
            .decode(s)
            .map_err(|_| serialization(m, "base64-encoded bytes"))
    }

    fn str_list(&self, m: &str) -> Result<Vec<String>, KmsApiError> {
        match self.0.get(m) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| serialization(m, "a list of strings"))
                })
                .collect(),
            Some(_) => Err(serialization(m, "a list of strings")),
        }
    }

    fn context(&self, m: &str) -> Result<Vec<(String, String)>, KmsApiError> {
        match self.0.get(m) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_string()))
                        .ok_or_else(|| serialization(m, "a map of strings"))
                })
                .collect(),
            Some(_) => Err(serialization(m, "a map of strings")),
        }
    }

    fn tags(&self, m: &str) -> Result<Vec<(String, String)>, KmsApiError> {
        let Some(v) = self.0.get(m).filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        let Value::Array(list) = v else {
            return Err(serialization(m, "a list of tags"));
        };
        let mut out = Vec::new();
        for t in list {
            let k = t.get("TagKey").and_then(Value::as_str);
            let val = t.get("TagValue").and_then(Value::as_str);
            match (k, val) {
                (Some(k), Some(v)) if !k.is_empty() && k.len() <= 128 && v.len() <= 256 => {
                    out.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return Err(KmsApiError::new(
                        "TagException",
                        400,
                        "Each tag needs a TagKey (1-128 characters) and a TagValue (0-256 characters)",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// `Limit` within 1..=`max`, else `default`.
    fn limit(&self, default: usize, max: usize) -> Result<usize, KmsApiError> {
        match self.opt_i64("Limit")? {
            None => Ok(default),
            Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
            Some(n) => Err(KmsApiError::validation(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
            ))),
        }
    }
}

fn ts(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn paged<T>(mut out: Value, member: &str, page: &Page<T>, f: impl Fn(&T) -> Value) -> Value {
    out[member] = Value::Array(page.items.iter().map(f).collect());
    out["Truncated"] = json!(page.next_marker.is_some());
    if let Some(m) = &page.next_marker {
        out["NextMarker"] = json!(m);
    }
    out
}

fn key_metadata(k: &KeyView) -> Value {
    let state = if k.state == "PendingDeletion" {
        "PendingDeletion"
    } else {
        k.state.as_str()
    };
    let mut v = json!({
        "AWSAccountId": k.account_id,
        "KeyId": k.key_id,
        "Arn": k.arn,
        "CreationDate": ts(k.created_at),
        "Enabled": k.state == "Enabled",
        "Description": k.description,
        "KeyUsage": k.key_usage,
        "KeyState": state,
        "Origin": k.origin,
        "KeyManager": k.manager,
        "CustomerMasterKeySpec": k.key_spec,
        "KeySpec": k.key_spec,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": false,
    });
    if let Some(d) = k.deletion_at {
        v["DeletionDate"] = ts(d);
    }
    if let Some(w) = k.pending_window_days {
        v["PendingDeletionWindowInDays"] = json!(w);
    }
    v
}

fn alias_json(ctx: &Ctx<'_>, a: &AliasView) -> Value {
    json!({
        "AliasName": a.alias_name,
        "AliasArn": ctx.state.registry.kms.alias_arn(ctx.account(), &a.alias_name),
        "TargetKeyId": a.key_id,
        "CreationDate": ts(a.created_at),
        "LastUpdatedDate": ts(a.updated_at),
    })
}

fn grant_json(g: &GrantView) -> Value {
    let mut v = json!({
        "KeyId": g.key_id,
        "GrantId": g.grant_id,
        "CreationDate": ts(g.created_at),
        "GranteePrincipal": g.grantee_principal,
        "IssuingAccount": g.issuing_account,
        "Operations": serde_json::from_str::<Value>(&g.operations).unwrap_or(json!([])),
    });
    if let Some(n) = &g.name {
        v["Name"] = json!(n);
    }
    if let Some(r) = &g.retiring_principal {
        v["RetiringPrincipal"] = json!(r);
    }
    if let Some(c) = &g.constraints {
        v["Constraints"] = serde_json::from_str(c).unwrap_or(Value::Null);
    }
    v
}

fn rotation_json(key: &KeyView, r: &RotationView) -> Value {
    json!({
        "KeyId": key.arn,
        "RotationDate": ts(r.created_at),
        "RotationType": if r.rotation_type == "AUTOMATIC" { "AUTOMATIC" } else { "ON_DEMAND" },
    })
}

fn check_algorithm(input: &Input, m: &str) -> Result<(), KmsApiError> {
    match input.opt_str(m)? {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(a) => Err(KmsApiError::new(
            "InvalidKeyUsageException",
            400,
            format!("{a} is not a valid encryption algorithm for a symmetric key"),
        )),
    }
}

/// The key a member names, after the caller is authorized for `op` on it.
async fn key_for(
    ctx: &Ctx<'_>,
    input: &Input,
    member: &str,
    op: &str,
) -> Result<KeyView, KmsApiError> {
    let k = input.key(member)?;
    let key = ctx.state.registry.kms.describe(ctx.account(), k).await?;
    ctx.authorize(op, Some(&key))?;
    Ok(key)
}

pub async fn run(ctx: &Ctx<'_>, op: &str, input: &Input) -> Result<Value, KmsApiError> {
    let kms = &ctx.state.registry.kms;
    let acct = ctx.account().to_string();
    let acct = acct.as_str();
    match op {
        "CreateKey" => {
            ctx.authorize("CreateKey", None)?;
            let description = input.opt_str("Description")?.unwrap_or("").to_string();
            if description.len() > 8192 {
                return Err(KmsApiError::validation(
                    "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192",
                ));
            }
            let spec = input
                .opt_str("KeySpec")?
                .or(input.opt_str("CustomerMasterKeySpec")?);
            if input.opt_str("CustomKeyStoreId")?.is_some() {
                return Err(KmsApiError::new(
                    "UnsupportedOperationException",
                    400,
                    "Berth has no custom key stores; configure transit custody instead (docs/security.md)",
                ));
            }
            let req = CreateKey {
                description,
                key_usage: input.opt_str("KeyUsage")?.map(str::to_string),
                key_spec: spec.map(str::to_string),
                origin: input.opt_str("Origin")?.map(str::to_string),
                policy: input.opt_str("Policy")?.map(str::to_string),
                tags: input.tags("Tags")?,
            };
            let row = kms.create_key(acct, &req).await?;
            Ok(json!({ "KeyMetadata": key_metadata(&row) }))
        }
        "DescribeKey" => {
            let key = key_for(ctx, input, "KeyId", "DescribeKey").await?;
            Ok(json!({ "KeyMetadata": key_metadata(&key) }))
        }
        "ListKeys" => {
            ctx.authorize("ListKeys", None)?;
            let limit = input.limit(100, 1000)?;
            let page = kms.list_keys(acct, input.opt_str("Marker")?, limit).await?;
            Ok(paged(
                json!({}),
                "Keys",
                &page,
                |k| json!({ "KeyId": k.key_id, "KeyArn": k.arn }),
            ))
        }
        "CreateAlias" => {
            let name = input.str("AliasName")?;
            let key = key_for(ctx, input, "TargetKeyId", "CreateAlias").await?;
            kms.create_alias(acct, name, &key.key_id).await?;
            Ok(json!({}))
        }
        "UpdateAlias" => {
            let name = input.str("AliasName")?;
            let key = key_for(ctx, input, "TargetKeyId", "UpdateAlias").await?;
            // The key the alias points to now must allow it too.
            if let Some(old) = kms.alias_key(acct, name).await? {
                let old = kms.describe(acct, &old).await?;
                ctx.authorize("UpdateAlias", Some(&old))?;
            }
            kms.update_alias(acct, name, &key.key_id).await?;
            Ok(json!({}))
        }
        "DeleteAlias" => {
            let name = input.str("AliasName")?;
            if let Some(k) = kms.alias_key(acct, name).await? {
                let key = kms.describe(acct, &k).await?;
                ctx.authorize("DeleteAlias", Some(&key))?;
            }
            kms.delete_alias(acct, name).await?;
            Ok(json!({}))
        }
        "ListAliases" => {
            let limit = input.limit(50, 100)?;
            let key = match input.opt_str("KeyId")? {
                Some(_) => Some(key_for(ctx, input, "KeyId", "ListAliases").await?),
                None => {
                    ctx.authorize("ListAliases", None)?;
                    None
                }
            };
            let page = kms
                .list_aliases(
                    acct,
                    key.as_ref().map(|k| k.key_id.as_str()),
                    input.opt_str("Marker")?,
                    limit,
                )
                .await?;
            Ok(paged(json!({}), "Aliases", &page, |a| alias_json(ctx, a)))
        }
        "EnableKey" => {
            let key = key_for(ctx, input, "KeyId", "EnableKey").await?;
            kms.enable_key(acct, &key.arn).await?;
            Ok(json!({}))
        }
        "DisableKey" => {
            let key = key_for(ctx, input, "KeyId", "DisableKey").await?;
            kms.disable_key(acct, &key.arn).await?;
            Ok(json!({}))
        }
        "ScheduleKeyDeletion" => {
            let key = key_for(ctx, input, "KeyId", "ScheduleKeyDeletion").await?;
            let row = kms
                .schedule_deletion(acct, &key.arn, input.opt_i64("PendingWindowInDays")?)
                .await?;
            Ok(json!({
                "KeyId": row.arn,
                "DeletionDate": row.deletion_at.map(ts),
                "KeyState": "PendingDeletion",
                "PendingWindowInDays": row.pending_window_days,
            }))
        }
        "CancelKeyDeletion" => {
            let key = key_for(ctx, input, "KeyId", "CancelKeyDeletion").await?;
            let row = kms.cancel_deletion(acct, &key.arn).await?;
            Ok(json!({ "KeyId": row.arn }))
        }
        "EnableKeyRotation" => {
            let key = key_for(ctx, input, "KeyId", "EnableKeyRotation").await?;
            kms.enable_rotation(acct, &key.arn, input.opt_i64("RotationPeriodInDays")?)
                .await?;
            Ok(json!({}))
        }
        "DisableKeyRotation" => {
            let key = key_for(ctx, input, "KeyId", "DisableKeyRotation").await?;
            kms.disable_rotation(acct, &key.arn).await?;
            Ok(json!({}))
        }
        "GetKeyRotationStatus" => {
            let key = key_for(ctx, input, "KeyId", "GetKeyRotationStatus").await?;
            let mut v = json!({
                "KeyRotationEnabled": key.rotation_enabled,
                "KeyId": key.arn,
            });
            if key.rotation_enabled {
                v["RotationPeriodInDays"] = json!(key.rotation_period_days);
                if let Some(n) = key.next_rotation_at {
                    v["NextRotationDate"] = ts(n);
                }
            }
            Ok(v)
        }
        "RotateKeyOnDemand" => {
            let key = key_for(ctx, input, "KeyId", "RotateKeyOnDemand").await?;
            let row = kms.rotate_on_demand(acct, &key.arn).await?;
            Ok(json!({ "KeyId": row.arn }))
        }
        "ListKeyRotations" => {
            let key = key_for(ctx, input, "KeyId", "ListKeyRotations").await?;
            let limit = input.limit(100, 1000)?;
            let (key, page) = kms
                .list_rotations(acct, &key.arn, input.opt_str("Marker")?, limit)
                .await?;
            Ok(paged(json!({}), "Rotations", &page, |r| {
                rotation_json(&key, r)
            }))
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let key = key_for(ctx, input, "KeyId", op).await?;
            let bytes = match (input.opt_i64("NumberOfBytes")?, input.opt_str("KeySpec")?) {
                (Some(_), Some(_)) => {
                    return Err(KmsApiError::validation(
                        "Please specify either number of bytes or key spec.",
                    ));
                }
                (Some(n), None) if (1..=1024).contains(&n) => n as usize,
                (Some(n), None) => {
                    return Err(KmsApiError::validation(format!(
                        "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024"
                    )));
                }
                (None, Some("AES_256")) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(s)) => {
                    return Err(KmsApiError::validation(format!(
                        "1 validation error detected: Value '{s}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
                    )));
                }
                (None, None) => {
                    return Err(KmsApiError::validation(
                        "Please specify either number of bytes or key spec.",
                    ));
                }
            };
            let pair = kms
                .generate_data_key(&key, bytes, &input.context("EncryptionContext")?)
                .await?;
            let mut v = json!({
                "CiphertextBlob": STANDARD.encode(&pair.ciphertext),
                "KeyId": pair.key_arn,
            });
            if op == "GenerateDataKey" {
                v["Plaintext"] = json!(STANDARD.encode(&pair.plaintext[..]));
            }
            Ok(v)
        }
        "Encrypt" => {
            let key = key_for(ctx, input, "KeyId", "Encrypt").await?;
            check_algorithm(input, "EncryptionAlgorithm")?;
            let plain = zeroize::Zeroizing::new(input.blob("Plaintext")?);
            if plain.is_empty() || plain.len() > 4096 {
                return Err(KmsApiError::validation(
                    "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length between 1 and 4096",
                ));
            }
            let ct = kms
                .encrypt(&key, &plain, &input.context("EncryptionContext")?)
                .await?;
            Ok(json!({
                "CiphertextBlob": STANDARD.encode(ct),
                "KeyId": key.arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "Decrypt" => {
            check_algorithm(input, "EncryptionAlgorithm")?;
            let blob = input.blob("CiphertextBlob")?;
            let key = ciphertext_key(ctx, &blob, input.opt_str("KeyId")?, "Decrypt").await?;
            let plain = kms
                .decrypt(&key, &blob, &input.context("EncryptionContext")?)
                .await?;
            Ok(json!({
                "KeyId": key.arn,
                "Plaintext": STANDARD.encode(&plain[..]),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "ReEncrypt" => {
            let blob = input.blob("CiphertextBlob")?;
            let source =
                ciphertext_key(ctx, &blob, input.opt_str("SourceKeyId")?, "ReEncryptFrom").await?;
            let dest = key_for(ctx, input, "DestinationKeyId", "ReEncryptTo").await?;
            let plain = kms
                .decrypt(&source, &blob, &input.context("SourceEncryptionContext")?)
                .await?;
            let ct = kms
                .encrypt(
                    &dest,
                    &plain,
                    &input.context("DestinationEncryptionContext")?,
                )
                .await?;
            Ok(json!({
                "CiphertextBlob": STANDARD.encode(ct),
                "SourceKeyId": source.arn,
                "KeyId": dest.arn,
                "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "TagResource" => {
            let key = key_for(ctx, input, "KeyId", "TagResource").await?;
            let tags = input.tags("Tags")?;
            if tags.is_empty() {
                return Err(not_null("Tags"));
            }
            kms.tag_key(acct, &key.arn, &tags).await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let key = key_for(ctx, input, "KeyId", "UntagResource").await?;
            kms.untag_key(acct, &key.arn, &input.str_list("TagKeys")?)
                .await?;
            Ok(json!({}))
        }
        "ListResourceTags" => {
            let key = key_for(ctx, input, "KeyId", "ListResourceTags").await?;
            let limit = input.limit(50, 50)?;
            let page = kms
                .list_tags(acct, &key.arn, input.opt_str("Marker")?, limit)
                .await?;
            Ok(paged(
                json!({}),
                "Tags",
                &page,
                |(k, v)| json!({ "TagKey": k, "TagValue": v }),
            ))
        }
        "UpdateKeyDescription" => {
            let key = key_for(ctx, input, "KeyId", "UpdateKeyDescription").await?;
            kms.update_description(acct, &key.arn, input.str("Description")?)
                .await?;
            Ok(json!({}))
        }
        "GetKeyPolicy" => {
            let key = key_for(ctx, input, "KeyId", "GetKeyPolicy").await?;
            policy_name(input)?;
            Ok(json!({ "Policy": key.policy, "PolicyName": "default" }))
        }
        "PutKeyPolicy" => {
            let key = key_for(ctx, input, "KeyId", "PutKeyPolicy").await?;
            policy_name(input)?;
            kms.put_policy(acct, &key.arn, input.str("Policy")?).await?;
            Ok(json!({}))
        }
        "CreateGrant" => {
            let key = key_for(ctx, input, "KeyId", "CreateGrant").await?;
            let grantee = input.str("GranteePrincipal")?;
            let ops = input.str_list("Operations")?;
            for o in &ops {
                if !GRANT_OPERATIONS.contains(&o.as_str()) {
                    return Err(KmsApiError::validation(format!(
                        "1 validation error detected: Value '[{o}]' at 'operations' failed to satisfy constraint: Member must satisfy enum value set"
                    )));
                }
            }
            let constraints = input.0.get("Constraints").filter(|c| !c.is_null()).cloned();
            let (id, token) = kms
                .create_grant(
                    acct,
                    &key.arn,
                    &ctx.caller.principal.arn,
                    grantee,
                    input.opt_str("RetiringPrincipal")?,
                    &ops,
                    constraints,
                    input.opt_str("Name")?,
                )
                .await?;
            Ok(json!({ "GrantToken": token, "GrantId": id }))
        }
        "ListGrants" => {
            let key = key_for(ctx, input, "KeyId", "ListGrants").await?;
            let limit = input.limit(50, 100)?;
            let (_, mut page) = kms
                .list_grants(acct, &key.arn, input.opt_str("Marker")?, limit)
                .await?;
            if let Some(id) = input.opt_str("GrantId")? {
                page.items.retain(|g| g.grant_id == id);
            }
            if let Some(p) = input.opt_str("GranteePrincipal")? {
                page.items.retain(|g| g.grantee_principal == p);
            }
            Ok(paged(json!({}), "Grants", &page, grant_json))
        }
        "RetireGrant" => {
            let token = input.opt_str("GrantToken")?;
            let key_and_id = match (input.opt_str("KeyId")?, input.opt_str("GrantId")?) {
                (Some(k), Some(g)) => Some((k, g)),
                _ => None,
            };
            let (key, grant) = kms.find_grant(acct, token, key_and_id).await?;
            // The retiring principal, the grantee (for RetireGrant in its
            // operations) or whoever the key's policies allow may retire it.
            let me = ctx.caller.principal.arn.as_str();
            let named =
                grant.retiring_principal.as_deref() == Some(me) || grant.grantee_principal == me;
            if !named {
                ctx.authorize("RetireGrant", Some(&key))?;
            }
            kms.delete_grant(&key, &grant.grant_id).await?;
            Ok(json!({}))
        }
        "RevokeGrant" => {
            let key = key_for(ctx, input, "KeyId", "RevokeGrant").await?;
            kms.revoke_grant(acct, &key.arn, input.str("GrantId")?)
                .await?;
            Ok(json!({}))
        }
        other => Err(KmsApiError::new(
            "UnsupportedOperationException",
            400,
            format!(
                "Berth does not implement the KMS operation {other} (see docs/api-compatibility.md)"
            ),
        )),
    }
}

const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

fn policy_name(input: &Input) -> Result<(), KmsApiError> {
    match input.opt_str("PolicyName")? {
        None | Some("default") => Ok(()),
        Some(_) => Err(KmsApiError::new(
            "NotFoundException",
            400,
            "The only valid policy name is 'default'",
        )),
    }
}

/// The key of a ciphertext (Decrypt needs no KeyId), checked against the
/// `KeyId` given, after the caller is authorized for `op` on it.
async fn ciphertext_key(
    ctx: &Ctx<'_>,
    blob: &[u8],
    given: Option<&str>,
    op: &str,
) -> Result<KeyView, KmsApiError> {
    let kms = &ctx.state.registry.kms;
    let key = kms.ciphertext_key(blob).await?;
    ctx.authorize(op, Some(&key))?;
    if let Some(k) = given {
        let named = kms.describe(ctx.account(), k).await?;
        if named.key_id != key.key_id {
            return Err(crate::kms::KmsError::incorrect_key().into());
        }
    }
    Ok(key)
}
