//! `berth iam …`: the operator's commands for accounts, IAM users, access keys
//! and identity policies, named after AWS IAM's; and `berth break-glass …`,
//! which removes resource policies that lock everyone out; `berth secrets put`,
//! upstream credentials for pull-through cache rules. They work on the
//! store directly (SQLite allows a running server and the CLI side by side);
//! a running server picks changes up within `auth::CACHE_TTL`.

use anyhow::{Context, bail};
use serde_json::json;

use crate::auth::{Access, new_access_key, new_account_id};
use crate::config::Config;
use crate::iam::{Policy, PolicyKind};
use crate::metadata::{MetadataStore, Repo};

#[derive(clap::Subcommand, Debug)]
pub enum IamCommand {
    /// Create an account (a registry) and its root access key.
    CreateAccount {
        /// 12 digits; generated when omitted.
        #[arg(long)]
        account_id: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List accounts.
    ListAccounts,
    /// Create an IAM user in an account.
    CreateUser {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
    },
    /// List the users of an account.
    ListUsers {
        #[arg(long)]
        account_id: String,
    },
    /// Create an access key for a user (or, without --user-name, for the account root).
    CreateAccessKey {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Deactivate an access key; registry tokens it issued stop working too.
    DeactivateAccessKey {
        #[arg(long)]
        access_key_id: String,
    },
    /// List the access keys of a user (or, without --user-name, of the account root).
    ListAccessKeys {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: Option<String>,
    },
    /// Delete an access key for good; tokens and download URLs it issued stop working.
    DeleteAccessKey {
        #[arg(long)]
        access_key_id: String,
    },
    /// Delete a user; as in AWS IAM, its access keys and policies must be deleted first.
    DeleteUser {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
    },
    /// Attach (or replace) an inline identity policy on a user.
    PutUserPolicy {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
        /// The policy JSON, or @FILE to read it from a file.
        #[arg(long)]
        policy_document: String,
    },
    /// Give a user a console password (AWS IAM's CreateLoginProfile), read
    /// from standard input.
    CreateLoginProfile(LoginProfileArgs),
    /// Change a user's console password (UpdateLoginProfile); its console
    /// password sessions end.
    UpdateLoginProfile(LoginProfileArgs),
    /// Whether a user has a console password (GetLoginProfile).
    GetLoginProfile {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
    },
    /// Remove a user's console password (DeleteLoginProfile); its console
    /// password sessions end.
    DeleteLoginProfile {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
    },
    /// Remove an inline identity policy from a user.
    DeleteUserPolicy {
        #[arg(long)]
        account_id: String,
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
}

/// The user and password of Create/UpdateLoginProfile.
#[derive(clap::Args, Debug)]
pub struct LoginProfileArgs {
    #[arg(long)]
    account_id: String,
    #[arg(long)]
    user_name: String,
    /// Read the password from standard input (one line); required.
    #[arg(long)]
    password_stdin: bool,
}

fn valid_user_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// Repairs made with direct access to the store, for when policies have
/// locked every caller out (docs/access-control.md, "Break-glass").
#[derive(clap::Subcommand, Debug)]
pub enum BreakGlassCommand {
    /// Remove a repository's policy, whatever it says.
    DeleteRepositoryPolicy {
        #[arg(long)]
        repository_name: String,
        /// Account (registry) id; defaults to the primary account.
        #[arg(long)]
        registry_id: Option<String>,
    },
    /// Remove a registry's policy, whatever it says.
    DeleteRegistryPolicy {
        /// Account (registry) id; defaults to the primary account.
        #[arg(long)]
        registry_id: Option<String>,
    },
}

/// Secrets for pull-through cache rules: what ECR keeps in Secrets Manager
/// under `ecr-pullthroughcache/…`, sealed with the master key here.
#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Store (or replace) upstream registry credentials; prints the ARN to
    /// give as a rule's credentialArn.
    Put {
        /// The secret's name, `ecr-pullthroughcache/…` (the prefix is added if missing).
        name: String,
        /// The user name at the upstream registry.
        #[arg(long)]
        username: String,
        /// Read the password or access token from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Account (registry) id; defaults to the primary account.
        #[arg(long)]
        account_id: Option<String>,
    },
}

/// Run one `berth secrets` command; prints JSON.
pub async fn secrets(config: &Config, cmd: SecretsCommand) -> anyhow::Result<()> {
    let meta = open_meta(config).await?;
    let master = crate::server::master_key(config).await?;
    let SecretsCommand::Put {
        name,
        username,
        password_stdin,
        account_id,
    } = cmd;
    let password = stdin_password(password_stdin)?;
    let password = password.as_str();
    if password.is_empty() {
        bail!("the password read from standard input is empty");
    }
    let account = match account_id {
        Some(id) => id,
        None => meta
            .primary_account()
            .await?
            .context("no account exists yet; pass --account-id")?,
    };
    if !meta.account_exists(&account).await? {
        bail!("account {account} does not exist");
    }
    let prefix = crate::pull_through::rules::SECRET_PREFIX;
    let name = if name.starts_with(prefix) {
        name
    } else {
        format!("{prefix}{name}")
    };
    let arn = crate::pull_through::put_secret(
        &meta,
        &master,
        &config.region,
        &account,
        &name,
        &username,
        password,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    print(&json!({ "ARN": arn, "Name": name }))
}

async fn open_meta(config: &Config) -> anyhow::Result<MetadataStore> {
    crate::server::open_metadata(config).await
}

fn print(out: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(out)?);
    Ok(())
}

/// One line of standard input, its line ending removed: a password, which
/// is never taken from a flag (`--password-stdin` must be given).
fn stdin_password(password_stdin: bool) -> anyhow::Result<String> {
    if !password_stdin {
        bail!("give the password on standard input with --password-stdin (flags show in `ps`)");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_string())
}

/// A password from standard input, checked against the password policy.
fn password_from_stdin(password_stdin: bool) -> anyhow::Result<String> {
    let password = stdin_password(password_stdin)?;
    crate::auth::passwords::check_policy(&password)
        .map_err(|e| anyhow::anyhow!("PasswordPolicyViolation: {e}"))?;
    Ok(password)
}

/// Run one `berth break-glass` command; prints JSON.
pub async fn break_glass(config: &Config, cmd: BreakGlassCommand) -> anyhow::Result<()> {
    let meta = open_meta(config).await?;
    let registry = async |given: Option<String>| -> anyhow::Result<String> {
        match given {
            Some(id) => Ok(id),
            None => meta
                .primary_account()
                .await?
                .context("no account exists yet; pass --registry-id"),
        }
    };
    let out = match cmd {
        BreakGlassCommand::DeleteRepositoryPolicy {
            repository_name,
            registry_id,
        } => {
            let id = registry(registry_id).await?;
            let repo = Repo {
                registry: &id,
                name: &repository_name,
            };
            let Some(row) = meta.get_repository(repo).await? else {
                bail!("repository {repository_name:?} does not exist in registry {id}");
            };
            meta.set_repository_policy(repo, None).await?;
            tracing::warn!(registry = %id, repository = %repository_name, "break-glass: repository policy deleted");
            json!({ "registryId": id, "repositoryName": repository_name, "deletedPolicyText": row.policy })
        }
        BreakGlassCommand::DeleteRegistryPolicy { registry_id } => {
            let id = registry(registry_id).await?;
            let old = meta.registry_policy(&id).await?;
            meta.set_registry_policy(&id, None).await?;
            tracing::warn!(registry = %id, "break-glass: registry policy deleted");
            json!({ "registryId": id, "deletedPolicyText": old })
        }
    };
    print(&out)
}

/// Run one `berth iam` command against the store; prints JSON.
pub async fn run(config: &Config, cmd: IamCommand) -> anyhow::Result<()> {
    let meta = open_meta(config).await?;
    let master = crate::server::master_key(config).await?;
    let access = Access::open(meta.clone(), master, &config.region).await?;
    let account_must_exist = async |id: &str| -> anyhow::Result<()> {
        if !meta.account_exists(id).await? {
            bail!("account {id} does not exist");
        }
        Ok(())
    };
    let out = match cmd {
        IamCommand::CreateAccount { account_id, name } => {
            let id = match account_id {
                Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => a,
                Some(a) => bail!("an account id is 12 digits, not {a:?}"),
                None => new_account_id(),
            };
            if !meta.create_account(&id, &name).await? {
                bail!("account {id} already exists");
            }
            let (key, secret) = new_access_key();
            access.create_key(&id, "", &key, &secret).await?;
            json!({ "AccountId": id, "AccessKeyId": key, "SecretAccessKey": secret })
        }
        IamCommand::ListAccounts => {
            let accounts: Vec<_> = meta
                .list_accounts()
                .await?
                .into_iter()
                .map(|(id, name)| json!({ "AccountId": id, "Name": name }))
                .collect();
            json!({ "Accounts": accounts })
        }
        IamCommand::CreateUser {
            account_id,
            user_name,
        } => {
            account_must_exist(&account_id).await?;
            if !valid_user_name(&user_name) {
                bail!("a user name is 1 to 64 of [A-Za-z0-9+=,.@_-]");
            }
            let (suffix, _) = new_access_key();
            let user_id = format!("AIDA{}", &suffix[4..]);
            if !meta.create_user(&account_id, &user_name, &user_id).await? {
                bail!("user {user_name} already exists in account {account_id}");
            }
            json!({ "User": {
                "UserName": user_name, "UserId": user_id,
                "Arn": format!("arn:aws:iam::{account_id}:user/{user_name}"),
            }})
        }
        IamCommand::ListUsers { account_id } => {
            let users: Vec<_> = meta
                .list_users(&account_id)
                .await?
                .into_iter()
                .map(|u| json!({ "UserName": u.name, "UserId": u.user_id }))
                .collect();
            json!({ "Users": users })
        }
        IamCommand::CreateAccessKey {
            account_id,
            user_name,
        } => {
            account_must_exist(&account_id).await?;
            let user = user_name.unwrap_or_default();
            if !user.is_empty() && meta.get_user(&account_id, &user).await?.is_none() {
                bail!("user {user} does not exist in account {account_id}");
            }
            let (key, secret) = new_access_key();
            access.create_key(&account_id, &user, &key, &secret).await?;
            json!({ "AccessKey": { "UserName": user, "AccessKeyId": key, "SecretAccessKey": secret, "Status": "Active" } })
        }
        IamCommand::DeactivateAccessKey { access_key_id } => {
            if !meta.set_access_key_active(&access_key_id, false).await? {
                bail!("access key {access_key_id} does not exist");
            }
            json!({ "AccessKeyId": access_key_id, "Status": "Inactive" })
        }
        IamCommand::ListAccessKeys {
            account_id,
            user_name,
        } => {
            account_must_exist(&account_id).await?;
            let user = user_name.unwrap_or_default();
            let keys: Vec<_> = meta
                .list_access_keys(&account_id, &user)
                .await?
                .into_iter()
                .map(|(id, active, created)| {
                    json!({
                        "UserName": user,
                        "AccessKeyId": id,
                        "Status": if active { "Active" } else { "Inactive" },
                        "CreateDate": humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(created.max(0) as u64)
                        ).to_string(),
                    })
                })
                .collect();
            json!({ "AccessKeyMetadata": keys })
        }
        IamCommand::DeleteAccessKey { access_key_id } => {
            if !meta.delete_access_key(&access_key_id).await? {
                bail!("access key {access_key_id} does not exist");
            }
            json!({ "AccessKeyId": access_key_id, "Deleted": true })
        }
        IamCommand::DeleteUser {
            account_id,
            user_name,
        } => match meta.delete_user(&account_id, &user_name).await? {
            None => bail!("user {user_name} does not exist in account {account_id}"),
            Some(false) => bail!(
                "DeleteConflict: user {user_name} still has access keys, policies or a login profile; delete them first (list-access-keys, delete-access-key, delete-user-policy, delete-login-profile)"
            ),
            Some(true) => json!({ "UserName": user_name, "Deleted": true }),
        },
        IamCommand::PutUserPolicy {
            account_id,
            user_name,
            policy_name,
            policy_document,
        } => {
            let doc = match policy_document.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
                }
                None => policy_document,
            };
            Policy::parse(&doc, PolicyKind::Identity)
                .map_err(|e| anyhow::anyhow!("invalid policy: {e}"))?;
            if meta.get_user(&account_id, &user_name).await?.is_none() {
                bail!("user {user_name} does not exist in account {account_id}");
            }
            meta.put_user_policy(&account_id, &user_name, &policy_name, &doc)
                .await?;
            json!({ "UserName": user_name, "PolicyName": policy_name })
        }
        IamCommand::CreateLoginProfile(args) => put_login_profile(&meta, args, true).await?,
        IamCommand::UpdateLoginProfile(args) => put_login_profile(&meta, args, false).await?,
        IamCommand::GetLoginProfile {
            account_id,
            user_name,
        } => {
            if meta.login_profile(&account_id, &user_name).await?.is_none() {
                bail!("NoSuchEntity: user {user_name} has no login profile");
            }
            json!({ "LoginProfile": { "UserName": user_name, "PasswordResetRequired": false } })
        }
        IamCommand::DeleteLoginProfile {
            account_id,
            user_name,
        } => {
            if !meta.delete_login_profile(&account_id, &user_name).await? {
                bail!("NoSuchEntity: user {user_name} has no login profile");
            }
            json!({ "UserName": user_name, "LoginProfileDeleted": true })
        }
        IamCommand::DeleteUserPolicy {
            account_id,
            user_name,
            policy_name,
        } => {
            if !meta
                .delete_user_policy(&account_id, &user_name, &policy_name)
                .await?
            {
                bail!("user {user_name} has no policy {policy_name}");
            }
            json!({ "UserName": user_name, "PolicyName": policy_name, "Deleted": true })
        }
    };
    print(&out)
}

/// CreateLoginProfile (`create`) or UpdateLoginProfile: the password from
/// standard input, checked, hashed (slowly, off the async threads) and stored.
async fn put_login_profile(
    meta: &MetadataStore,
    args: LoginProfileArgs,
    create: bool,
) -> anyhow::Result<serde_json::Value> {
    let LoginProfileArgs {
        account_id,
        user_name,
        password_stdin,
    } = args;
    let password = password_from_stdin(password_stdin)?;
    if meta.get_user(&account_id, &user_name).await?.is_none() {
        bail!("NoSuchEntity: user {user_name} does not exist in account {account_id}");
    }
    let hash = tokio::task::spawn_blocking(move || crate::auth::passwords::hash(&password)).await?;
    if !meta
        .put_login_profile(&account_id, &user_name, &hash, create)
        .await?
    {
        if create {
            bail!("EntityAlreadyExists: user {user_name} already has a login profile");
        }
        bail!("NoSuchEntity: user {user_name} has no login profile");
    }
    Ok(json!({ "LoginProfile": { "UserName": user_name, "PasswordResetRequired": false } }))
}
