//! GetAccountSetting and PutAccountSetting: the registry's account settings
//! (which names and values Berth takes, and what they do, is
//! `registry::account_settings`).

use serde_json::{Value, json};

use super::input::{self, Input};
use super::{Ctx, EcrError};
use crate::registry::account_settings::AccountSettingError;

fn setting_error(e: AccountSettingError) -> EcrError {
    match e {
        AccountSettingError::Meta(m) => EcrError::meta(m),
        AccountSettingError::UnknownName(_) | AccountSettingError::InvalidValue { .. } => {
            EcrError::invalid(e.to_string())
        }
        AccountSettingError::Unsupported { .. } => {
            EcrError::new("ValidationException", 400, e.to_string())
        }
    }
}

/// The `name` member: required, 1 to 64 characters (the model's bounds).
fn setting_name(input: &Input) -> Result<&str, EcrError> {
    let name = input.str("name")?;
    input::check_len("name", name, 1, 64)?;
    Ok(name)
}

pub(super) async fn get_account_setting(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = setting_name(input)?;
    let registry = ctx.own_registry();
    ctx.authorize("GetAccountSetting", &registry, None).await?;
    let (setting, value) = ctx
        .state
        .registry
        .account_setting(&registry, name)
        .await
        .map_err(setting_error)?;
    Ok(json!({ "name": setting.name(), "value": value }))
}

pub(super) async fn put_account_setting(ctx: &Ctx<'_>, input: &Input) -> Result<Value, EcrError> {
    let name = setting_name(input)?;
    let value = input.str("value")?;
    let registry = ctx.own_registry();
    ctx.authorize("PutAccountSetting", &registry, None).await?;
    let setting = ctx
        .state
        .registry
        .put_account_setting(&registry, name, value)
        .await
        .map_err(setting_error)?;
    Ok(json!({ "name": setting.name(), "value": value }))
}
