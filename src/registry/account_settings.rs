//! ECR's account settings (GetAccountSetting / PutAccountSetting), per
//! registry. A value Berth accepts takes effect; one that would describe
//! something Berth does not do is refused by name, never stored:
//!
//! - `BASIC_SCAN_TYPE_VERSION`: the engine of basic scanning. Berth's is its
//!   own scanner (docs/scanning.md), the counterpart of ECR's `AWS_NATIVE`;
//!   ECR's older `CLAIR` engine is not there to switch to.
//! - `REGISTRY_POLICY_SCOPE`: which requests the registry policy governs.
//!   Berth evaluates it on every ECR and `/v2/` request (`auth::Access`), ECR's
//!   `V2`; `V1` (the policy governing only replication, pull-through cache
//!   and CreateRepository) is not available.
//! - `BLOB_MOUNTING`: whether a cross-repository mount
//!   (`POST /v2/<name>/blobs/uploads/?mount=…&from=…`) links the blob from
//!   the other repository of the registry (`ENABLED`, what Berth has always
//!   done, so its default) or opens an ordinary upload instead (`DISABLED`).
//!
//! Unset settings answer their default, the value that is true of Berth (for
//! the first two, also what ECR answers a new account).

use super::Registry;
use crate::metadata::MetaError;

/// An account setting ECR defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountSetting {
    BasicScanTypeVersion,
    RegistryPolicyScope,
    BlobMounting,
}

/// Why a setting cannot be read or put.
#[derive(Debug, thiserror::Error)]
pub enum AccountSettingError {
    /// Not a setting ECR has.
    #[error(
        "Invalid parameter at 'name' failed to satisfy constraint: 'Member must be one of: BASIC_SCAN_TYPE_VERSION, REGISTRY_POLICY_SCOPE, BLOB_MOUNTING'"
    )]
    UnknownName(String),
    /// Not one of ECR's values for the setting.
    #[error(
        "Invalid parameter at 'value' failed to satisfy constraint: 'Valid values for {name}: {valid}'"
    )]
    InvalidValue { name: &'static str, valid: String },
    /// One of ECR's values, for something Berth does not do.
    #[error("{name} cannot be set to {value}: {why}")]
    Unsupported {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl AccountSetting {
    pub const ALL: [AccountSetting; 3] = [
        AccountSetting::BasicScanTypeVersion,
        AccountSetting::RegistryPolicyScope,
        AccountSetting::BlobMounting,
    ];

    pub fn parse(name: &str) -> Option<AccountSetting> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// ECR's name of the setting.
    pub fn name(self) -> &'static str {
        match self {
            AccountSetting::BasicScanTypeVersion => "BASIC_SCAN_TYPE_VERSION",
            AccountSetting::RegistryPolicyScope => "REGISTRY_POLICY_SCOPE",
            AccountSetting::BlobMounting => "BLOB_MOUNTING",
        }
    }

    /// ECR's values of the setting, each with why Berth refuses it (`None`:
    /// Berth does what the value says).
    fn values(self) -> &'static [(&'static str, Option<&'static str>)] {
        match self {
            AccountSetting::BasicScanTypeVersion => &[
                ("AWS_NATIVE", None),
                (
                    "CLAIR",
                    Some(
                        "basic scanning in Berth is its own scanner (AWS_NATIVE's counterpart); there is no Clair engine to switch to",
                    ),
                ),
            ],
            AccountSetting::RegistryPolicyScope => &[
                ("V2", None),
                (
                    "V1",
                    Some(
                        "Berth evaluates the registry policy on every request (V2); the V1 scope, which limits it to replication, pull-through cache and CreateRepository, is not available",
                    ),
                ),
            ],
            AccountSetting::BlobMounting => &[("ENABLED", None), ("DISABLED", None)],
        }
    }

    /// The value of a registry that never put the setting: what Berth does.
    pub fn default_value(self) -> &'static str {
        match self {
            AccountSetting::BasicScanTypeVersion => "AWS_NATIVE",
            AccountSetting::RegistryPolicyScope => "V2",
            AccountSetting::BlobMounting => "ENABLED",
        }
    }

    /// `value` if Berth can take it for this setting.
    fn check(self, value: &str) -> Result<(), AccountSettingError> {
        let values = self.values();
        match values.iter().find(|(v, _)| *v == value) {
            Some((_, None)) => Ok(()),
            Some((_, Some(why))) => Err(AccountSettingError::Unsupported {
                name: self.name(),
                value: value.to_string(),
                why,
            }),
            None => Err(AccountSettingError::InvalidValue {
                name: self.name(),
                valid: values
                    .iter()
                    .map(|(v, _)| *v)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

fn setting(name: &str) -> Result<AccountSetting, AccountSettingError> {
    AccountSetting::parse(name).ok_or_else(|| AccountSettingError::UnknownName(name.to_string()))
}

impl Registry {
    /// `registry`'s value of the setting `name` (its default if never put).
    pub async fn account_setting(
        &self,
        registry: &str,
        name: &str,
    ) -> Result<(AccountSetting, String), AccountSettingError> {
        let s = setting(name)?;
        let value = self.meta.account_setting(registry, s.name()).await?;
        Ok((s, value.unwrap_or_else(|| s.default_value().to_string())))
    }

    /// Put `registry`'s value of the setting `name`, if Berth can take it.
    pub async fn put_account_setting(
        &self,
        registry: &str,
        name: &str,
        value: &str,
    ) -> Result<AccountSetting, AccountSettingError> {
        let s = setting(name)?;
        s.check(value)?;
        self.meta
            .put_account_setting(registry, s.name(), value)
            .await?;
        Ok(s)
    }

    /// Whether cross-repository mounts are honoured in `registry`.
    pub(super) async fn blob_mounting(&self, registry: &str) -> Result<bool, MetaError> {
        let s = AccountSetting::BlobMounting;
        let value = self.meta.account_setting(registry, s.name()).await?;
        Ok(value.as_deref().unwrap_or(s.default_value()) == "ENABLED")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_values_berth_takes() {
        for s in AccountSetting::ALL {
            assert_eq!(AccountSetting::parse(s.name()), Some(s));
            s.check(s.default_value()).unwrap();
        }
        assert_eq!(AccountSetting::parse("basic_scan_type_version"), None);
    }

    #[test]
    fn values_berth_does_not_have_are_refused_by_name() {
        let refused = |s: AccountSetting, v: &str| match s.check(v) {
            Err(AccountSettingError::Unsupported { name, value, why }) => {
                assert_eq!((name, value.as_str()), (s.name(), v));
                why
            }
            other => panic!("{s:?} {v}: {other:?}"),
        };
        assert!(refused(AccountSetting::BasicScanTypeVersion, "CLAIR").contains("scanner"));
        assert!(refused(AccountSetting::RegistryPolicyScope, "V1").contains("every request"));
        AccountSetting::BlobMounting.check("DISABLED").unwrap();
        let e = AccountSetting::RegistryPolicyScope
            .check("V3")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Valid values for REGISTRY_POLICY_SCOPE: V2, V1"),
            "{e}"
        );
        assert!(matches!(
            AccountSetting::BlobMounting.check("enabled"),
            Err(AccountSettingError::InvalidValue { .. })
        ));
    }
}
