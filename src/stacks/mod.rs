//! CloudFormation stacks: the service behind the CloudFormation face. It
//! owns the rules of stacks and change sets — which template and
//! parameters are valid ([`template`], [`eval`]), what a change would do
//! ([`plan`]), the order resources are created, updated, replaced and
//! deleted in, rollback on failure, and the statuses and events a stack
//! goes through ([`engine`]) — and keeps every stack's state in the
//! metadata store, so every node sees it.
//!
//! Resources are provisioned by [`providers`] through a [`Provisioner`]:
//! ECR API calls made in the caller's name, so that a stack can do exactly
//! what its caller could do with the aws CLI. The face supplies it (it is
//! the ECR face, called in process), which keeps this service below the
//! faces.
//!
//! A stack operation runs in a task of its own on the node that received
//! it, holding the stack by a lease it renews at every step; a node that
//! stops mid-operation leaves the lease to expire, and the stack then
//! shows the operation as failed.

pub mod engine;
pub mod eval;
pub mod plan;
pub mod providers;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event of a stack, as stored.
pub use crate::metadata::StackEventRow as StackEvent;
use crate::metadata::{
    ChangeSetRow, MetaError, MetadataStore, StackEventRow, StackRow, now_millis,
};
pub use eval::GivenParameter;
pub use plan::Change;
use template::Template;

/// How long an operation holds its stack without renewing.
const LEASE_MS: i64 = 10 * 60 * 1000;
/// How long a request waits for the operation it started before answering
/// (the stack is then still in progress; clients poll, as with AWS).
const WAIT_FOR_OPERATION: std::time::Duration = std::time::Duration::from_secs(20);
/// How long deleted stacks are listed (ListStacks, DescribeStacks by id).
const DELETED_RETENTION_MS: i64 = 90 * 24 * 3600 * 1000;
pub const STACK_TYPE: &str = "AWS::CloudFormation::Stack";

/// A failed API call of a provider, in the API's own terms.
#[derive(Clone, Debug)]
pub struct ApiFault {
    pub service: &'static str,
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl ApiFault {
    /// The reason a resource event shows, in CloudFormation's words.
    pub fn reason(&self) -> String {
        let handler = match (self.status, self.code.as_str()) {
            (_, c) if c.contains("NotFound") => "NotFound",
            (_, c) if c.contains("AlreadyExists") => "AlreadyExists",
            (_, "AccessDeniedException") => "AccessDenied",
            (s, _) if s >= 500 => "ServiceInternalError",
            _ => "InvalidRequest",
        };
        format!(
            "Resource handler returned message: \"{}\" (Service: {}, Status Code: {}, Error Code: {}) (HandlerErrorCode: {handler})",
            self.message, self.service, self.status, self.code
        )
    }
}

/// The calls a stack makes to provision its resources, in the name of the
/// caller that started the operation.
#[async_trait::async_trait]
pub trait Provisioner: Send + Sync {
    /// Call an ECR API operation with a JSON input, as the caller.
    async fn call(&self, operation: &str, input: Value) -> std::result::Result<Value, ApiFault>;
    /// The caller's account: stacks, and the resources they make, are its.
    fn account(&self) -> &str;
    /// The value of the parameter-store parameter `name` an
    /// `AWS::SSM::Parameter::Value<…>` template parameter names, read as
    /// the caller (`ssm:GetParameters`): `Ok(None)` when there is none, the
    /// error when the caller may not read it.
    fn parameter(&self, name: &str) -> std::result::Result<Option<String>, String>;
}

/// Why a stack operation is refused, each with CloudFormation's error code.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// `ValidationError`.
    #[error("{0}")]
    Validation(String),
    /// `AlreadyExistsException`.
    #[error("{0}")]
    AlreadyExists(String),
    /// `ChangeSetNotFound`.
    #[error("ChangeSet [{0}] does not exist")]
    ChangeSetNotFound(String),
    /// `InvalidChangeSetStatus`.
    #[error("{0}")]
    InvalidChangeSetStatus(String),
    /// `TokenAlreadyExistsException`-free conflicts: another operation holds the stack.
    #[error("{0}")]
    InProgress(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<template::TemplateError> for StackError {
    fn from(e: template::TemplateError) -> StackError {
        StackError::Validation(e.0)
    }
}

type Result<T> = std::result::Result<T, StackError>;

/// A parameter of a stack as it was given (the name, for SSM-typed ones)
/// and as it resolved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamRecord {
    pub key: String,
    pub value: String,
    pub resolved: Option<String>,
    pub no_echo: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRecord {
    pub key: String,
    pub value: String,
    pub description: Option<String>,
    pub export_name: Option<String>,
}

/// A resource of a stack: what it is, its physical resource, and the
/// properties it was last given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceRecord {
    pub resource_type: String,
    pub physical_id: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub updated_at: i64,
    pub properties: Value,
    pub attributes: BTreeMap<String, Value>,
    pub deletion_policy: Option<String>,
    pub update_replace_policy: Option<String>,
}

/// A stack's state beyond its status: the stack service's document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StackDoc {
    pub description: Option<String>,
    pub template: String,
    pub parameters: Vec<ParamRecord>,
    pub outputs: Vec<OutputRecord>,
    pub tags: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    pub disable_rollback: bool,
    pub termination_protection: bool,
    pub resources: BTreeMap<String, ResourceRecord>,
    /// The export names the stack imports (`Fn::ImportValue`).
    #[serde(default)]
    pub imports: Vec<String>,
    /// The next event's sequence number.
    pub next_event: i64,
}

/// A stack as the face shows it.
#[derive(Clone, Debug)]
pub struct StackView {
    pub row: StackRow,
    pub doc: StackDoc,
}

/// A change set's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangeSetDoc {
    pub change_set_type: String,
    pub description: Option<String>,
    pub template: String,
    pub parameters: Vec<ParamRecord>,
    pub tags: Vec<(String, String)>,
    pub capabilities: Vec<String>,
    pub changes: Vec<Change>,
}

#[derive(Clone, Debug)]
pub struct ChangeSetView {
    pub row: ChangeSetRow,
    pub stack_name: String,
    pub doc: ChangeSetDoc,
}

/// What a create, update or change set gives.
#[derive(Clone, Debug, Default)]
pub struct StackInput {
    pub stack_name: String,
    pub template_body: Option<String>,
    pub use_previous_template: bool,
    pub parameters: Vec<GivenParameter>,
    /// `None`: keep the stack's tags (on update).
    pub tags: Option<Vec<(String, String)>>,
    pub capabilities: Vec<String>,
    /// `DO_NOTHING` (= DisableRollback), `ROLLBACK` or `DELETE`.
    pub on_failure: Option<String>,
    pub disable_rollback: Option<bool>,
    pub description: Option<String>,
    /// CreateStack's `EnableTerminationProtection`.
    pub termination_protection: bool,
}

/// A template's declared parameters and what it needs, for
/// ValidateTemplate and GetTemplateSummary.
#[derive(Clone, Debug)]
pub struct TemplateSummary {
    pub description: Option<String>,
    pub parameters: Vec<ParameterSummary>,
    pub resource_types: Vec<String>,
    pub version: Option<String>,
    pub metadata: Option<Value>,
    pub resources: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct ParameterSummary {
    pub key: String,
    pub default: Option<String>,
    pub parameter_type: String,
    pub no_echo: bool,
    pub description: Option<String>,
    pub allowed_values: Vec<String>,
}

/// The stack service.
pub struct Stacks {
    meta: MetadataStore,
    region: String,
}

/// A template and its parameters, checked and evaluated for one stack.
pub struct Prepared {
    pub template: Template,
    pub body: String,
    pub params: BTreeMap<String, Value>,
    pub records: Vec<ParamRecord>,
    pub conditions: BTreeMap<String, bool>,
    pub pseudo: eval::Pseudo,
    /// The exports of the account's other stacks.
    pub exports: eval::Exports,
    /// The export names the template imports.
    pub imports: Vec<String>,
    /// The stack's tags, which its taggable resources get too.
    pub stack_tags: Vec<(String, String)>,
}

impl Prepared {
    /// What the template's expressions see, given what is `known` of the
    /// stack's resources.
    pub fn scope<'a>(
        &'a self,
        known: &'a BTreeMap<String, eval::Known>,
        planning: bool,
    ) -> eval::Scope<'a> {
        eval::Scope {
            pseudo: &self.pseudo,
            params: &self.params,
            conditions: &self.conditions,
            mappings: self.template.section("Mappings"),
            resources: known,
            exports: &self.exports,
            planning,
        }
    }

    /// The export names the template's outputs declare, where they can be
    /// known before deployment.
    pub fn export_names(&self) -> Vec<String> {
        let known = BTreeMap::new();
        let scope = self.scope(&known, true);
        self.template
            .section("Outputs")
            .into_iter()
            .flatten()
            .filter(|(_, o)| {
                o.get("Condition")
                    .and_then(Value::as_str)
                    .is_none_or(|c| self.conditions.get(c).copied().unwrap_or(false))
            })
            .filter_map(|(_, o)| o.get("Export")?.get("Name"))
            .filter_map(|n| match scope.eval(n) {
                Ok(Some(Value::String(s))) if !s.contains(eval::UNKNOWN) => Some(s),
                _ => None,
            })
            .collect()
    }
}

pub fn stack_name_ok(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= 128
        && b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

fn is_in_progress(status: &str) -> bool {
    status.ends_with("_IN_PROGRESS") && status != "REVIEW_IN_PROGRESS"
}

/// Statuses from which a stack may be updated.
const UPDATABLE: &[&str] = &[
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_FAILED",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
];

impl Stacks {
    pub fn new(meta: MetadataStore, region: String) -> Arc<Stacks> {
        Arc::new(Stacks { meta, region })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn stack_arn(&self, account: &str, name: &str, id: &str) -> String {
        format!(
            "arn:aws:cloudformation:{}:{account}:stack/{name}/{id}",
            self.region
        )
    }

    fn parse(&self, body: &str) -> Result<Template> {
        let t = Template::parse(body, providers::supported)?;
        let mut reads = Vec::new();
        for section in ["Resources", "Outputs"] {
            if let Some(v) = t.root.get(section) {
                template::collect_getatts(v, &mut reads);
            }
        }
        for (name, attr) in reads {
            let ty = t.resources()[&name]["Type"].as_str().unwrap_or_default();
            if !providers::attributes(ty).contains(&attr.as_str()) {
                return Err(StackError::Validation(format!(
                    "Template error: resource {name} does not support attribute type {attr} in Fn::GetAtt"
                )));
            }
        }
        for (logical, r) in t.resources() {
            let ty = r["Type"].as_str().unwrap_or_default();
            if let Some(p) = r.get("Properties") {
                providers::check_properties(logical, ty, p, true)
                    .map_err(StackError::Validation)?;
            }
        }
        Ok(t)
    }

    /// Check a template and its parameters for a stack, and plan it against
    /// the stack's current resources (which catches what evaluation can
    /// find before anything is created).
    pub async fn prepare(
        &self,
        prov: &dyn Provisioner,
        stack_name: &str,
        stack_id: &str,
        body: &str,
        given: &[GivenParameter],
        previous: &[ParamRecord],
    ) -> Result<Prepared> {
        let account = prov.account();
        let template = self.parse(body)?;
        let exports = self.exports(account, Some(stack_id)).await?;
        let previous: BTreeMap<String, String> = previous
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let lookup = |name: &str| prov.parameter(name);
        let (params, raw) = eval::resolve_parameters(&template, given, &previous, &lookup)?;
        let pseudo = eval::Pseudo {
            account: account.to_string(),
            region: self.region.clone(),
            stack_name: stack_name.to_string(),
            stack_id: stack_id.to_string(),
        };
        eval::check_rules(&template, &pseudo, &params)?;
        let conditions = eval::evaluate_conditions(&template, &pseudo, &params)?;
        let records = template
            .parameters()
            .iter()
            .filter_map(|(name, decl)| {
                let value = raw.get(*name)?.clone();
                let resolved = match params.get(*name) {
                    Some(Value::String(s)) if *s != value => Some(s.clone()),
                    _ => None,
                };
                Some(ParamRecord {
                    key: name.to_string(),
                    value,
                    resolved,
                    no_echo: decl
                        .get("NoEcho")
                        .is_some_and(|v| v == &Value::Bool(true) || v == "true"),
                })
            })
            .collect();
        let mut prepared = Prepared {
            template,
            body: body.to_string(),
            params,
            records,
            conditions,
            pseudo,
            exports,
            imports: Vec::new(),
            stack_tags: Vec::new(),
        };
        let known = BTreeMap::new();
        let mut imports = Vec::new();
        let scope = prepared.scope(&known, true);
        for section in ["Resources", "Outputs"] {
            if let Some(v) = prepared.template.root.get(section) {
                scope.imports(v, &mut imports);
            }
        }
        prepared.imports = imports;
        Ok(prepared)
    }

    /// The exports of the account's stacks (but `except`): name → (value,
    /// stack name).
    pub async fn exports(&self, account: &str, except: Option<&str>) -> Result<eval::Exports> {
        let mut out = eval::Exports::new();
        for row in self.meta.stacks_of(account, false, 0).await? {
            if Some(row.stack_id.as_str()) == except {
                continue;
            }
            for o in parse_doc(&row.doc).outputs {
                if let Some(n) = o.export_name {
                    out.insert(n, (o.value, row.name.clone()));
                }
            }
        }
        Ok(out)
    }

    /// ListExports: every export of the account, with the stack that makes it.
    pub async fn list_exports(&self, account: &str) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for row in self.meta.stacks_of(account, false, 0).await? {
            for o in parse_doc(&row.doc).outputs {
                if let Some(n) = o.export_name {
                    out.push((row.stack_id.clone(), n, o.value));
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// The live stacks (other than `except`) importing any of `names`: (export, stack name).
    pub async fn importers(
        &self,
        account: &str,
        names: &[String],
        except: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for row in self.meta.stacks_of(account, false, 0).await? {
            if Some(row.stack_id.as_str()) == except {
                continue;
            }
            for i in parse_doc(&row.doc).imports {
                if names.contains(&i) {
                    out.push((i, row.name.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Refuse a change that drops an export another stack imports.
    async fn check_exports_kept(
        &self,
        view: &StackView,
        kept: &[String],
        deleting: bool,
    ) -> Result<()> {
        let dropped: Vec<String> = view
            .doc
            .outputs
            .iter()
            .filter_map(|o| o.export_name.clone())
            .filter(|n| !kept.contains(n))
            .collect();
        if dropped.is_empty() {
            return Ok(());
        }
        let users = self
            .importers(&view.row.account_id, &dropped, Some(&view.row.stack_id))
            .await?;
        match users.first() {
            None => Ok(()),
            Some((name, by)) if deleting => Err(StackError::Validation(format!(
                "Export {name} cannot be deleted as it is in use by {by}"
            ))),
            Some((name, by)) => Err(StackError::Validation(format!(
                "Cannot delete export {name} as it is in use by {by}."
            ))),
        }
    }

    /// ValidateTemplate / GetTemplateSummary of a template body.
    pub fn summarize(&self, body: &str) -> Result<TemplateSummary> {
        let t = self.parse(body)?;
        let parameters = t
            .parameters()
            .iter()
            .map(|(k, d)| ParameterSummary {
                key: k.to_string(),
                default: d.get("Default").map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                }),
                parameter_type: d
                    .get("Type")
                    .and_then(Value::as_str)
                    .unwrap_or("String")
                    .to_string(),
                no_echo: d
                    .get("NoEcho")
                    .is_some_and(|v| v == &Value::Bool(true) || v == "true"),
                description: d
                    .get("Description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                allowed_values: d
                    .get("AllowedValues")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Ok(TemplateSummary {
            description: t.description().map(str::to_string),
            parameters,
            resource_types: t.resource_types(),
            version: t
                .root
                .get("AWSTemplateFormatVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            metadata: t.root.get("Metadata").cloned(),
            resources: t
                .resources()
                .iter()
                .map(|(k, v)| (k.clone(), v["Type"].as_str().unwrap_or("").to_string()))
                .collect(),
        })
    }

    /// The stack `name_or_id` names in `account`: a live stack by name, or
    /// any stack (deleted ones too) by its ARN.
    pub async fn stack(&self, account: &str, name_or_id: &str) -> Result<StackView> {
        let row = if name_or_id.starts_with("arn:") {
            self.meta
                .stack_by_id(name_or_id)
                .await?
                .filter(|r| r.account_id == account)
        } else {
            self.meta.stack_by_name(account, name_or_id).await?
        };
        let Some(row) = row else {
            return Err(StackError::Validation(format!(
                "Stack with id {name_or_id} does not exist"
            )));
        };
        let row = self.settle(row).await?;
        let doc = parse_doc(&row.doc);
        Ok(StackView { row, doc })
    }

    /// A stack whose operation's lease ran out (its node stopped) is shown
    /// as that operation failed.
    async fn settle(&self, mut row: StackRow) -> Result<StackRow> {
        if !is_in_progress(&row.status) || row.lease_until.is_none_or(|l| l > now_millis()) {
            return Ok(row);
        }
        let failed = match row.status.as_str() {
            "CREATE_IN_PROGRESS" => "CREATE_FAILED",
            "ROLLBACK_IN_PROGRESS" => "ROLLBACK_FAILED",
            "DELETE_IN_PROGRESS" => "DELETE_FAILED",
            _ => "UPDATE_ROLLBACK_FAILED",
        };
        let before = row.status.clone();
        let mut doc = parse_doc(&row.doc);
        let reason =
            "The operation was interrupted: the Berth node running it stopped before it finished"
                .to_string();
        let event = StackEventRow {
            seq: doc.next_event,
            event_id: uuid::Uuid::new_v4().to_string(),
            logical_id: row.name.clone(),
            physical_id: Some(row.stack_id.clone()),
            resource_type: STACK_TYPE.to_string(),
            status: failed.to_string(),
            reason: Some(reason.clone()),
            timestamp: now_millis(),
            properties: None,
        };
        doc.next_event += 1;
        row.status = failed.to_string();
        row.status_reason = Some(reason);
        row.lease_until = None;
        row.doc = serde_json::to_string(&doc).unwrap_or_default();
        if self
            .meta
            .stack_write(&row, &[before.as_str()], &[event])
            .await?
        {
            Ok(row)
        } else {
            Ok(self.meta.stack_by_id(&row.stack_id).await?.unwrap_or(row))
        }
    }

    /// DescribeStacks: one stack, or every live stack of the account.
    pub async fn describe(
        &self,
        account: &str,
        name_or_id: Option<&str>,
    ) -> Result<Vec<StackView>> {
        if let Some(n) = name_or_id {
            return Ok(vec![self.stack(account, n).await?]);
        }
        let mut out = Vec::new();
        for row in self.meta.stacks_of(account, false, 0).await? {
            let row = self.settle(row).await?;
            let doc = parse_doc(&row.doc);
            out.push(StackView { row, doc });
        }
        Ok(out)
    }

    /// ListStacks: live stacks and those deleted in the last 90 days.
    pub async fn list(&self, account: &str) -> Result<Vec<StackView>> {
        let since = now_millis() - DELETED_RETENTION_MS;
        let mut out = Vec::new();
        for row in self.meta.stacks_of(account, true, since).await? {
            let row = self.settle(row).await?;
            let doc = parse_doc(&row.doc);
            out.push(StackView { row, doc });
        }
        Ok(out)
    }

    pub async fn events(
        &self,
        stack_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StackEventRow>> {
        Ok(self.meta.stack_events(stack_id, before, limit).await?)
    }

    /// CreateStack: check, store the stack in CREATE_IN_PROGRESS and create
    /// its resources.
    pub async fn create_stack(
        self: &Arc<Self>,
        prov: Arc<dyn Provisioner>,
        input: StackInput,
    ) -> Result<String> {
        let account = prov.account().to_string();
        let name = &input.stack_name;
        let Some(body) = input.template_body.as_deref() else {
            return Err(StackError::Validation(
                "Either Template URL or Template Body must be specified.".into(),
            ));
        };
        let stack_id = self.stack_arn(&account, name, &uuid::Uuid::new_v4().to_string());
        let mut prepared = self
            .prepare(prov.as_ref(), name, &stack_id, body, &input.parameters, &[])
            .await?;
        prepared.stack_tags = input.tags.clone().unwrap_or_default();
        plan::changes(&BTreeMap::new(), &prepared)?;
        let disable_rollback = match input.on_failure.as_deref() {
            Some("DO_NOTHING") => true,
            Some(_) => false,
            None => input.disable_rollback.unwrap_or(false),
        };
        let doc = StackDoc {
            description: prepared.template.description().map(str::to_string),
            template: prepared.body.clone(),
            parameters: prepared.records.clone(),
            tags: input.tags.clone().unwrap_or_default(),
            capabilities: input.capabilities.clone(),
            disable_rollback,
            termination_protection: input.termination_protection,
            ..StackDoc::default()
        };
        let (row, events) = new_stack_row(&account, name, &stack_id, "CREATE_IN_PROGRESS", doc);
        if !self.meta.stack_create(&row, &events).await? {
            return Err(StackError::AlreadyExists(format!(
                "Stack [{name}] already exists"
            )));
        }
        let delete_on_failure = input.on_failure.as_deref() == Some("DELETE");
        let run = engine::Run::new(self.clone(), prov, row);
        self.finish(run.create(prepared, delete_on_failure)).await;
        Ok(stack_id)
    }

    /// Run an operation to its end in a task of its own (it goes on if
    /// the client hangs up), waiting a while for it.
    async fn finish(&self, op: impl std::future::Future<Output = ()> + Send + 'static) {
        let task = tokio::spawn(op);
        let _ = tokio::time::timeout(WAIT_FOR_OPERATION, task).await;
    }

    /// The template and parameters an update gives, with the stack's own
    /// where it says to keep them.
    fn update_body<'a>(&self, input: &'a StackInput, doc: &'a StackDoc) -> Result<&'a str> {
        match (input.template_body.as_deref(), input.use_previous_template) {
            (Some(_), true) => Err(StackError::Validation(
                "You cannot specify both usePreviousTemplate and Template Body/Template URL".into(),
            )),
            (Some(b), false) => Ok(b),
            (None, true) => Ok(doc.template.as_str()),
            (None, false) => Err(StackError::Validation(
                "Either Template URL or Template Body must be specified.".into(),
            )),
        }
    }

    fn check_updatable(view: &StackView) -> Result<()> {
        if UPDATABLE.contains(&view.row.status.as_str()) {
            return Ok(());
        }
        Err(StackError::Validation(format!(
            "Stack:{} is in {} state and can not be updated.",
            view.row.stack_id, view.row.status
        )))
    }

    /// UpdateStack: check, compare with the stack, and apply the change.
    pub async fn update_stack(
        self: &Arc<Self>,
        prov: Arc<dyn Provisioner>,
        input: StackInput,
    ) -> Result<String> {
        let account = prov.account().to_string();
        let view = self.stack(&account, &input.stack_name).await?;
        Self::check_updatable(&view)?;
        let body = self.update_body(&input, &view.doc)?.to_string();
        let mut prepared = self
            .prepare(
                prov.as_ref(),
                &view.row.name,
                &view.row.stack_id,
                &body,
                &input.parameters,
                &view.doc.parameters,
            )
            .await?;
        let tags = input.tags.clone().unwrap_or_else(|| view.doc.tags.clone());
        prepared.stack_tags = tags.clone();
        let changes = plan::changes(&view.doc.resources, &prepared)?;
        self.check_exports_kept(&view, &prepared.export_names(), false)
            .await?;
        if changes.is_empty()
            && body == view.doc.template
            && prepared.records == view.doc.parameters
            && tags == view.doc.tags
        {
            return Err(StackError::Validation(
                "No updates are to be performed.".into(),
            ));
        }
        let mut row = view.row.clone();
        let before = row.status.clone();
        row.status = "UPDATE_IN_PROGRESS".into();
        row.status_reason = Some("User Initiated".into());
        row.lease_until = Some(now_millis() + LEASE_MS);
        let disable_rollback = input.disable_rollback.unwrap_or(view.doc.disable_rollback);
        let run = engine::Run::claim(self.clone(), prov, row, &before)
            .await?
            .ok_or_else(|| busy(&view))?;
        self.finish(run.update(prepared, tags, input.capabilities.clone(), disable_rollback))
            .await;
        Ok(view.row.stack_id)
    }

    /// DeleteStack: delete the stack's resources (keeping those whose
    /// DeletionPolicy is Retain, and `retain` of a stack whose deletion failed).
    pub async fn delete_stack(
        self: &Arc<Self>,
        prov: Arc<dyn Provisioner>,
        name_or_id: &str,
        retain: Vec<String>,
    ) -> Result<()> {
        let account = prov.account().to_string();
        let view = match self.stack(&account, name_or_id).await {
            Ok(v) => v,
            // Deleting a stack that does not exist succeeds, as in CloudFormation.
            Err(StackError::Validation(_)) if !name_or_id.starts_with("arn:") => return Ok(()),
            Err(e) => return Err(e),
        };
        if view.row.status == "DELETE_COMPLETE" {
            return Ok(());
        }
        if view.doc.termination_protection {
            return Err(StackError::Validation(format!(
                "Stack [{}] cannot be deleted while TerminationProtection is enabled",
                view.row.name
            )));
        }
        if is_in_progress(&view.row.status) {
            if view.row.status == "DELETE_IN_PROGRESS" {
                return Ok(());
            }
            return Err(busy(&view));
        }
        self.check_exports_kept(&view, &[], true).await?;
        if !retain.is_empty() && view.row.status != "DELETE_FAILED" {
            return Err(StackError::Validation(format!(
                "Invalid operation on stack [{}]: RetainResources can only be specified when the stack is in the DELETE_FAILED state",
                view.row.stack_id
            )));
        }
        let mut row = view.row.clone();
        let before = row.status.clone();
        row.status = "DELETE_IN_PROGRESS".into();
        row.status_reason = Some("User Initiated".into());
        row.lease_until = Some(now_millis() + LEASE_MS);
        let run = engine::Run::claim(self.clone(), prov, row, &before)
            .await?
            .ok_or_else(|| busy(&view))?;
        self.finish(run.delete(retain)).await;
        Ok(())
    }

    /// UpdateTerminationProtection: whether DeleteStack is refused.
    pub async fn set_termination_protection(
        &self,
        account: &str,
        name_or_id: &str,
        enabled: bool,
    ) -> Result<String> {
        let view = self.stack(account, name_or_id).await?;
        if view.row.status == "DELETE_COMPLETE" {
            return Err(StackError::Validation(format!(
                "Stack with id {name_or_id} does not exist"
            )));
        }
        let mut doc = view.doc.clone();
        doc.termination_protection = enabled;
        let mut row = view.row.clone();
        row.doc = serde_json::to_string(&doc).unwrap_or_default();
        if !self
            .meta
            .stack_write(&row, &[view.row.status.as_str()], &[])
            .await?
        {
            return Err(busy(&view));
        }
        Ok(view.row.stack_id)
    }

    /// CreateChangeSet: plan a change to a stack (a new one, in
    /// REVIEW_IN_PROGRESS, for `CREATE`) and store it.
    pub async fn create_change_set(
        &self,
        prov: &dyn Provisioner,
        name: &str,
        change_set_type: &str,
        input: StackInput,
    ) -> Result<(String, String)> {
        let account = prov.account();
        let stack_name = &input.stack_name;
        let existing = match self.stack(account, stack_name).await {
            Ok(v) => Some(v),
            Err(StackError::Validation(_)) => None,
            Err(e) => return Err(e),
        };
        let (stack_id, new_stack) = match (change_set_type, &existing) {
            ("CREATE", Some(v)) if v.row.status != "REVIEW_IN_PROGRESS" => {
                return Err(StackError::AlreadyExists(format!(
                    "Stack [{stack_name}] already exists and cannot be created again with the changeSet [{name}]."
                )));
            }
            ("CREATE", Some(v)) => (v.row.stack_id.clone(), false),
            ("CREATE", None) => (
                self.stack_arn(account, stack_name, &uuid::Uuid::new_v4().to_string()),
                true,
            ),
            (_, None) => {
                return Err(StackError::Validation(format!(
                    "Stack [{stack_name}] does not exist"
                )));
            }
            (_, Some(v)) => {
                Self::check_updatable(v)?;
                (v.row.stack_id.clone(), false)
            }
        };
        let empty = StackDoc::default();
        let current = existing.as_ref().map_or(&empty, |v| &v.doc);
        let body = if change_set_type == "CREATE" {
            input.template_body.clone().ok_or_else(|| {
                StackError::Validation(
                    "Either Template URL or Template Body must be specified.".into(),
                )
            })?
        } else {
            self.update_body(&input, current)?.to_string()
        };
        let mut prepared = self
            .prepare(
                prov,
                stack_name,
                &stack_id,
                &body,
                &input.parameters,
                &current.parameters,
            )
            .await?;
        let tags = input.tags.clone().unwrap_or_else(|| current.tags.clone());
        prepared.stack_tags = tags.clone();
        let changes = plan::changes(&current.resources, &prepared)?;
        let unchanged = change_set_type != "CREATE"
            && changes.is_empty()
            && body == current.template
            && prepared.records == current.parameters
            && tags == current.tags;
        let (status, execution, reason) = if unchanged {
            (
                "FAILED",
                "UNAVAILABLE",
                Some("The submitted information didn't contain changes. Submit different information to create a change set.".to_string()),
            )
        } else {
            ("CREATE_COMPLETE", "AVAILABLE", None)
        };
        let doc = ChangeSetDoc {
            change_set_type: change_set_type.to_string(),
            description: input.description.clone(),
            template: body,
            parameters: prepared.records,
            tags,
            capabilities: input.capabilities.clone(),
            changes,
        };
        let cs = ChangeSetRow {
            change_set_id: format!(
                "arn:aws:cloudformation:{}:{account}:changeSet/{name}/{}",
                self.region,
                uuid::Uuid::new_v4()
            ),
            stack_id: stack_id.clone(),
            name: name.to_string(),
            status: status.into(),
            execution_status: execution.into(),
            status_reason: reason,
            created_at: now_millis(),
            doc: serde_json::to_string(&doc).unwrap_or_default(),
        };
        let new_row = new_stack.then(|| {
            let doc = StackDoc {
                template: String::new(),
                ..StackDoc::default()
            };
            new_stack_row(account, stack_name, &stack_id, "REVIEW_IN_PROGRESS", doc)
        });
        let stored = self
            .meta
            .change_set_create(&cs, new_row.as_ref().map(|(r, e)| (r, e.as_slice())))
            .await?;
        if !stored {
            return Err(StackError::AlreadyExists(format!(
                "ChangeSet [{name}] already exists"
            )));
        }
        Ok((cs.change_set_id, stack_id))
    }

    /// The change set `name_or_arn` (by name, of `stack`).
    pub async fn change_set(
        &self,
        account: &str,
        name_or_arn: &str,
        stack: Option<&str>,
    ) -> Result<ChangeSetView> {
        let row = if name_or_arn.starts_with("arn:") {
            self.meta.change_set(name_or_arn).await?
        } else {
            let Some(stack) = stack else {
                return Err(StackError::Validation(
                    "StackName must be specified if ChangeSetName is not specified as an ARN."
                        .into(),
                ));
            };
            let view = match self.stack(account, stack).await {
                Ok(v) => v,
                Err(StackError::Validation(_)) => {
                    return Err(StackError::ChangeSetNotFound(name_or_arn.to_string()));
                }
                Err(e) => return Err(e),
            };
            self.meta
                .change_sets_of(&view.row.stack_id)
                .await?
                .into_iter()
                .find(|c| c.name == name_or_arn)
        };
        let Some(row) = row else {
            return Err(StackError::ChangeSetNotFound(name_or_arn.to_string()));
        };
        let stack = self
            .meta
            .stack_by_id(&row.stack_id)
            .await?
            .filter(|s| s.account_id == account)
            .ok_or_else(|| StackError::ChangeSetNotFound(name_or_arn.to_string()))?;
        let doc = serde_json::from_str(&row.doc).unwrap_or_default();
        Ok(ChangeSetView {
            row,
            stack_name: stack.name,
            doc,
        })
    }

    pub async fn change_sets(&self, account: &str, stack: &str) -> Result<Vec<ChangeSetView>> {
        let view = self.stack(account, stack).await?;
        Ok(self
            .meta
            .change_sets_of(&view.row.stack_id)
            .await?
            .into_iter()
            .map(|row| {
                let doc = serde_json::from_str(&row.doc).unwrap_or_default();
                ChangeSetView {
                    row,
                    stack_name: view.row.name.clone(),
                    doc,
                }
            })
            .collect())
    }

    pub async fn delete_change_set(
        &self,
        account: &str,
        name_or_arn: &str,
        stack: Option<&str>,
    ) -> Result<()> {
        let cs = self.change_set(account, name_or_arn, stack).await?;
        self.meta.change_set_delete(&cs.row.change_set_id).await?;
        Ok(())
    }

    /// ExecuteChangeSet: apply a change set to its stack (it stays, as
    /// EXECUTE_COMPLETE; every other change set of the stack is then gone, as
    /// in CloudFormation).
    pub async fn execute_change_set(
        self: &Arc<Self>,
        prov: Arc<dyn Provisioner>,
        name_or_arn: &str,
        stack: Option<&str>,
        disable_rollback: Option<bool>,
    ) -> Result<()> {
        let account = prov.account().to_string();
        let cs = self.change_set(&account, name_or_arn, stack).await?;
        if cs.row.execution_status != "AVAILABLE" {
            return Err(StackError::InvalidChangeSetStatus(format!(
                "ChangeSet [{}] cannot be executed in its current status of [{}]",
                cs.row.change_set_id, cs.row.status
            )));
        }
        let view = self.stack(&account, &cs.row.stack_id).await?;
        let mut prepared = self
            .prepare(
                prov.as_ref(),
                &view.row.name,
                &view.row.stack_id,
                &cs.doc.template,
                &cs.doc
                    .parameters
                    .iter()
                    .map(|p| GivenParameter {
                        key: p.key.clone(),
                        value: Some(p.value.clone()),
                        use_previous: false,
                    })
                    .collect::<Vec<_>>(),
                &view.doc.parameters,
            )
            .await?;
        prepared.stack_tags = cs.doc.tags.clone();
        let mut row = view.row.clone();
        let before = row.status.clone();
        let creating = cs.doc.change_set_type == "CREATE";
        if creating && before != "REVIEW_IN_PROGRESS" {
            return Err(StackError::InvalidChangeSetStatus(format!(
                "ChangeSet [{}] cannot be executed: its stack is in {before}",
                cs.row.change_set_id
            )));
        }
        if !creating {
            Self::check_updatable(&view)?;
            self.check_exports_kept(&view, &prepared.export_names(), false)
                .await?;
        }
        row.status = if creating {
            "CREATE_IN_PROGRESS"
        } else {
            "UPDATE_IN_PROGRESS"
        }
        .into();
        row.status_reason = Some("User Initiated".into());
        row.lease_until = Some(now_millis() + LEASE_MS);
        let rollback_disabled = disable_rollback.unwrap_or(view.doc.disable_rollback);
        let run = engine::Run::claim(self.clone(), prov, row, &before)
            .await?
            .ok_or_else(|| busy(&view))?;
        self.meta
            .change_set_executed(&view.row.stack_id, &cs.row.change_set_id)
            .await?;
        if creating {
            let mut run = run;
            run.doc.tags = cs.doc.tags.clone();
            run.doc.capabilities = cs.doc.capabilities.clone();
            run.doc.disable_rollback = rollback_disabled;
            self.finish(run.create(prepared, false)).await;
        } else {
            self.finish(run.update(
                prepared,
                cs.doc.tags.clone(),
                cs.doc.capabilities.clone(),
                rollback_disabled,
            ))
            .await;
        }
        Ok(())
    }
}

fn busy(view: &StackView) -> StackError {
    StackError::Validation(format!(
        "Stack:{} is in {} state and can not be updated.",
        view.row.stack_id, view.row.status
    ))
}

fn parse_doc(doc: &str) -> StackDoc {
    serde_json::from_str(doc).unwrap_or_default()
}

/// A new stack's row and its first event.
fn new_stack_row(
    account: &str,
    name: &str,
    stack_id: &str,
    status: &str,
    mut doc: StackDoc,
) -> (StackRow, Vec<StackEventRow>) {
    let now = now_millis();
    let event = StackEventRow {
        seq: 1,
        event_id: uuid::Uuid::new_v4().to_string(),
        logical_id: name.to_string(),
        physical_id: Some(stack_id.to_string()),
        resource_type: STACK_TYPE.to_string(),
        status: status.to_string(),
        reason: Some("User Initiated".to_string()),
        timestamp: now,
        properties: None,
    };
    doc.next_event = 2;
    let row = StackRow {
        stack_id: stack_id.to_string(),
        account_id: account.to_string(),
        name: name.to_string(),
        status: status.to_string(),
        status_reason: Some("User Initiated".to_string()),
        created_at: now,
        updated_at: None,
        deleted_at: None,
        lease_until: is_in_progress(status).then_some(now + LEASE_MS),
        doc: serde_json::to_string(&doc).unwrap_or_default(),
    };
    (row, vec![event])
}

#[cfg(test)]
mod tests;
