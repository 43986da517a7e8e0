//! The CloudFormation actions: their parameters and the XML of their results.

use crate::aws_query::{Params, QueryError, elem, escape, members, opt_elem, timestamp};
use crate::stacks::{
    ChangeSetView, GivenParameter, ParamRecord, StackEvent, StackInput, StackView, TemplateSummary,
};

use super::Ctx;

/// The actions of the face, with their metrics labels.
const ACTIONS: &[(&str, &str)] = &[
    ("CreateStack", "cloudformation:CreateStack"),
    ("UpdateStack", "cloudformation:UpdateStack"),
    ("DeleteStack", "cloudformation:DeleteStack"),
    ("DescribeStacks", "cloudformation:DescribeStacks"),
    ("ListStacks", "cloudformation:ListStacks"),
    ("DescribeStackEvents", "cloudformation:DescribeStackEvents"),
    (
        "DescribeStackResources",
        "cloudformation:DescribeStackResources",
    ),
    (
        "DescribeStackResource",
        "cloudformation:DescribeStackResource",
    ),
    ("ListStackResources", "cloudformation:ListStackResources"),
    ("GetTemplate", "cloudformation:GetTemplate"),
    ("GetTemplateSummary", "cloudformation:GetTemplateSummary"),
    ("ValidateTemplate", "cloudformation:ValidateTemplate"),
    ("CreateChangeSet", "cloudformation:CreateChangeSet"),
    ("DescribeChangeSet", "cloudformation:DescribeChangeSet"),
    ("ListChangeSets", "cloudformation:ListChangeSets"),
    ("ExecuteChangeSet", "cloudformation:ExecuteChangeSet"),
    ("DeleteChangeSet", "cloudformation:DeleteChangeSet"),
    ("ListExports", "cloudformation:ListExports"),
    ("ListImports", "cloudformation:ListImports"),
    (
        "UpdateTerminationProtection",
        "cloudformation:UpdateTerminationProtection",
    ),
];

/// Events per DescribeStackEvents page.
const EVENTS_PAGE: i64 = 100;

pub fn label(action: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(a, _)| *a == action).map(|(_, l)| *l)
}

/// Run `action`; the answer is the XML inside `<{action}Result>`.
pub async fn run(ctx: &Ctx<'_>, action: &str, p: &Params) -> Result<String, QueryError> {
    if let Some(v) = p.opt("Version")
        && v != "2010-05-15"
    {
        return Err(QueryError::new(
            "InvalidAction",
            400,
            format!("Version {v} of the CloudFormation API is not supported (2010-05-15 is)"),
        ));
    }
    match action {
        "CreateStack" => create_stack(ctx, p).await,
        "UpdateStack" => update_stack(ctx, p).await,
        "DeleteStack" => delete_stack(ctx, p).await,
        "DescribeStacks" => describe_stacks(ctx, p).await,
        "ListStacks" => list_stacks(ctx, p).await,
        "DescribeStackEvents" => describe_stack_events(ctx, p).await,
        "DescribeStackResources" => describe_stack_resources(ctx, p, false).await,
        "DescribeStackResource" => describe_stack_resources(ctx, p, true).await,
        "ListStackResources" => list_stack_resources(ctx, p).await,
        "GetTemplate" => get_template(ctx, p).await,
        "GetTemplateSummary" => get_template_summary(ctx, p).await,
        "ValidateTemplate" => validate_template(ctx, p),
        "CreateChangeSet" => create_change_set(ctx, p).await,
        "DescribeChangeSet" => describe_change_set(ctx, p).await,
        "ListChangeSets" => list_change_sets(ctx, p).await,
        "ExecuteChangeSet" => execute_change_set(ctx, p).await,
        "DeleteChangeSet" => delete_change_set(ctx, p).await,
        "ListExports" => list_exports(ctx).await,
        "ListImports" => list_imports(ctx, p).await,
        "UpdateTerminationProtection" => update_termination_protection(ctx, p).await,
        _ => Err(QueryError::new(
            "InvalidAction",
            400,
            format!(
                "The action or operation requested is invalid. Verify that the action is typed correctly. ({action} is not one Berth answers; see docs/api-compatibility.md)"
            ),
        )),
    }
}

fn stack_name(p: &Params) -> Result<String, QueryError> {
    let name = p.required("StackName")?;
    if !name.starts_with("arn:") && !crate::stacks::stack_name_ok(name) {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{name}' at 'stackName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*|arn:[-a-zA-Z0-9:/._+]*"
        )));
    }
    Ok(name.to_string())
}

fn template_body(p: &Params) -> Result<Option<String>, QueryError> {
    if p.opt("TemplateURL").is_some() {
        return Err(QueryError::validation(
            "TemplateURL is not supported: Berth does not fetch templates from S3; send the template as TemplateBody (aws cloudformation deploy sends it so for templates up to 51,200 bytes)",
        ));
    }
    Ok(p.opt("TemplateBody").map(str::to_string))
}

/// Parameters of CreateStack, UpdateStack, CreateChangeSet, DeleteStack and
/// ExecuteChangeSet that Berth does not act on: refused by name when given
/// (an empty list counts as not given), so that nobody believes a role,
/// a timeout or a stack policy is in force.
const NOT_SUPPORTED: &[&str] = &[
    "RoleARN",
    "NotificationARNs",
    "TimeoutInMinutes",
    "StackPolicyBody",
    "StackPolicyURL",
    "StackPolicyDuringUpdateBody",
    "StackPolicyDuringUpdateURL",
    "RollbackConfiguration",
    "ResourceTypes",
    "ResourcesToImport",
    "ClientRequestToken",
    "RetainExceptOnCreate",
    "ImportExistingResources",
    "OnStackFailure",
];

fn refuse_unsupported(p: &Params) -> Result<(), QueryError> {
    for name in NOT_SUPPORTED {
        if p.given(name) {
            return Err(QueryError::validation(format!(
                "{name} is not supported by Berth's CloudFormation API (see docs/api-compatibility.md); leave it out"
            )));
        }
    }
    if p.opt("DeletionMode").is_some_and(|m| m != "STANDARD") {
        return Err(QueryError::validation(
            "DeletionMode FORCE_DELETE_STACK is not supported by Berth's CloudFormation API",
        ));
    }
    if p.bool("IncludeNestedStacks")? == Some(true) {
        return Err(QueryError::validation(
            "IncludeNestedStacks is not supported: Berth has no nested stacks",
        ));
    }
    Ok(())
}

fn stack_input(p: &Params) -> Result<StackInput, QueryError> {
    refuse_unsupported(p)?;
    let parameters = p
        .structs("Parameters")
        .into_iter()
        .map(|m| {
            let key = m.required("ParameterKey")?.to_string();
            Ok(GivenParameter {
                key,
                value: m.get("ParameterValue").map(str::to_string),
                use_previous: m.bool("UsePreviousValue")?.unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>, QueryError>>()?;
    let tags = if p.get("Tags").is_some() || p.get("Tags.member.1.Key").is_some() {
        let mut tags = Vec::new();
        for t in p.structs("Tags") {
            tags.push((
                t.required("Key")?.to_string(),
                t.get("Value").unwrap_or("").to_string(),
            ));
        }
        if tags.len() > 50 {
            return Err(QueryError::validation(
                "Number of tags exceeds the limit of 50",
            ));
        }
        Some(tags)
    } else {
        None
    };
    let on_failure = p.opt("OnFailure").map(str::to_string);
    if let Some(o) = &on_failure
        && !["DO_NOTHING", "ROLLBACK", "DELETE"].contains(&o.as_str())
    {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{o}' at 'onFailure' failed to satisfy constraint: Member must satisfy enum value set: [DO_NOTHING, ROLLBACK, DELETE]"
        )));
    }
    let disable_rollback = p.bool("DisableRollback")?;
    if on_failure.is_some() && disable_rollback.is_some() {
        return Err(QueryError::validation(
            "You may only specify one of OnFailure and DisableRollback",
        ));
    }
    Ok(StackInput {
        stack_name: stack_name(p)?,
        template_body: template_body(p)?,
        use_previous_template: p.bool("UsePreviousTemplate")?.unwrap_or(false),
        parameters,
        tags,
        capabilities: p.list("Capabilities"),
        on_failure,
        disable_rollback,
        description: p.opt("Description").map(str::to_string),
        termination_protection: p.bool("EnableTerminationProtection")?.unwrap_or(false),
    })
}

async fn create_stack(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let input = stack_input(p)?;
    ctx.authorize("CreateStack", &ctx.stack_resource(&input.stack_name))?;
    let id = ctx
        .state
        .stacks
        .create_stack(ctx.provisioner(), input)
        .await?;
    Ok(format!("<StackId>{}</StackId>", escape(&id)))
}

async fn update_stack(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let input = stack_input(p)?;
    ctx.authorize("UpdateStack", &ctx.stack_resource(&input.stack_name))?;
    let id = ctx
        .state
        .stacks
        .update_stack(ctx.provisioner(), input)
        .await?;
    Ok(format!("<StackId>{}</StackId>", escape(&id)))
}

async fn delete_stack(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    refuse_unsupported(p)?;
    let name = stack_name(p)?;
    ctx.authorize("DeleteStack", &ctx.stack_resource(&name))?;
    ctx.state
        .stacks
        .delete_stack(ctx.provisioner(), &name, p.list("RetainResources"))
        .await?;
    Ok(String::new())
}

fn parameters_xml(out: &mut String, params: &[ParamRecord]) {
    members(out, "Parameters", params, |o, p| {
        elem(o, "ParameterKey", &p.key);
        elem(
            o,
            "ParameterValue",
            if p.no_echo { "****" } else { &p.value },
        );
        if !p.no_echo {
            opt_elem(o, "ResolvedValue", p.resolved.as_deref());
        }
    });
}

fn tags_xml(out: &mut String, tags: &[(String, String)]) {
    members(out, "Tags", tags, |o, (k, v)| {
        elem(o, "Key", k);
        elem(o, "Value", v);
    });
}

fn stack_xml(out: &mut String, v: &StackView) {
    let r = &v.row;
    let d = &v.doc;
    elem(out, "StackId", &r.stack_id);
    elem(out, "StackName", &r.name);
    opt_elem(out, "Description", d.description.as_deref());
    parameters_xml(out, &d.parameters);
    elem(out, "CreationTime", &timestamp(r.created_at));
    if let Some(t) = r.updated_at {
        elem(out, "LastUpdatedTime", &timestamp(t));
    }
    if let Some(t) = r.deleted_at {
        elem(out, "DeletionTime", &timestamp(t));
    }
    elem(out, "StackStatus", &r.status);
    opt_elem(out, "StackStatusReason", r.status_reason.as_deref());
    elem(
        out,
        "DisableRollback",
        if d.disable_rollback { "true" } else { "false" },
    );
    out.push_str("<NotificationARNs/>");
    members(out, "Capabilities", &d.capabilities, |o, c| {
        o.push_str(&escape(c))
    });
    members(out, "Outputs", &d.outputs, |o, x| {
        elem(o, "OutputKey", &x.key);
        elem(o, "OutputValue", &x.value);
        opt_elem(o, "Description", x.description.as_deref());
        opt_elem(o, "ExportName", x.export_name.as_deref());
    });
    tags_xml(out, &d.tags);
    elem(
        out,
        "EnableTerminationProtection",
        if d.termination_protection {
            "true"
        } else {
            "false"
        },
    );
    out.push_str(
        "<DriftInformation><StackDriftStatus>NOT_CHECKED</StackDriftStatus></DriftInformation>",
    );
}

async fn describe_stacks(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let name = p.opt("StackName");
    let resource = name.map_or_else(|| "*".to_string(), |n| ctx.stack_resource(n));
    ctx.authorize("DescribeStacks", &resource)?;
    let stacks = ctx.state.stacks.describe(ctx.account(), name).await?;
    let mut out = String::new();
    members(&mut out, "Stacks", &stacks, stack_xml);
    Ok(out)
}

async fn list_stacks(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    ctx.authorize("ListStacks", "*")?;
    let filter = p.list("StackStatusFilter");
    let stacks: Vec<StackView> = ctx
        .state
        .stacks
        .list(ctx.account())
        .await?
        .into_iter()
        .filter(|s| filter.is_empty() || filter.contains(&s.row.status))
        .collect();
    let mut out = String::new();
    members(&mut out, "StackSummaries", &stacks, |o, v| {
        elem(o, "StackId", &v.row.stack_id);
        elem(o, "StackName", &v.row.name);
        opt_elem(o, "TemplateDescription", v.doc.description.as_deref());
        elem(o, "CreationTime", &timestamp(v.row.created_at));
        if let Some(t) = v.row.updated_at {
            elem(o, "LastUpdatedTime", &timestamp(t));
        }
        if let Some(t) = v.row.deleted_at {
            elem(o, "DeletionTime", &timestamp(t));
        }
        elem(o, "StackStatus", &v.row.status);
        opt_elem(o, "StackStatusReason", v.row.status_reason.as_deref());
        o.push_str(
            "<DriftInformation><StackDriftStatus>NOT_CHECKED</StackDriftStatus></DriftInformation>",
        );
    });
    Ok(out)
}

/// The stack a call names, once the caller may perform `action` on it.
async fn named_stack(ctx: &Ctx<'_>, p: &Params, action: &str) -> Result<StackView, QueryError> {
    let name = stack_name(p)?;
    ctx.authorize(action, &ctx.stack_resource(&name))?;
    Ok(ctx.state.stacks.stack(ctx.account(), &name).await?)
}

fn page_scope(ctx: &Ctx<'_>, stack_id: &str) -> String {
    format!("DescribeStackEvents\n{stack_id}\n{}", ctx.account())
}

async fn describe_stack_events(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let v = named_stack(ctx, p, "DescribeStackEvents").await?;
    let before = match p.opt("NextToken") {
        Some(t) => ctx
            .state
            .access
            .open_page_token(&page_scope(ctx, &v.row.stack_id), t)
            .and_then(|c| c.parse::<i64>().ok())
            .ok_or_else(|| QueryError::validation("Invalid NextToken"))?,
        None => i64::MAX,
    };
    let events = ctx
        .state
        .stacks
        .events(&v.row.stack_id, before, EVENTS_PAGE + 1)
        .await?;
    let more = events.len() as i64 > EVENTS_PAGE;
    let page = &events[..events.len().min(EVENTS_PAGE as usize)];
    let mut out = String::new();
    members(&mut out, "StackEvents", page, |o, e: &StackEvent| {
        elem(o, "StackId", &v.row.stack_id);
        elem(o, "EventId", &e.event_id);
        elem(o, "StackName", &v.row.name);
        elem(o, "LogicalResourceId", &e.logical_id);
        opt_elem(o, "PhysicalResourceId", e.physical_id.as_deref());
        elem(o, "ResourceType", &e.resource_type);
        elem(o, "Timestamp", &timestamp(e.timestamp));
        elem(o, "ResourceStatus", &e.status);
        opt_elem(o, "ResourceStatusReason", e.reason.as_deref());
        opt_elem(o, "ResourceProperties", e.properties.as_deref());
    });
    if more && let Some(last) = page.last() {
        let token = ctx
            .state
            .access
            .seal_page_token(&page_scope(ctx, &v.row.stack_id), &last.seq.to_string());
        elem(&mut out, "NextToken", &token);
    }
    Ok(out)
}

async fn describe_stack_resources(
    ctx: &Ctx<'_>,
    p: &Params,
    one: bool,
) -> Result<String, QueryError> {
    let action = if one {
        "DescribeStackResource"
    } else {
        "DescribeStackResources"
    };
    if !one && p.opt("StackName").is_none() && p.opt("PhysicalResourceId").is_some() {
        return Err(QueryError::validation(
            "Berth finds stack resources by StackName only (PhysicalResourceId alone is not supported)",
        ));
    }
    let v = named_stack(ctx, p, action).await?;
    let logical = if one {
        Some(p.required("LogicalResourceId")?)
    } else {
        p.opt("LogicalResourceId")
    };
    let resources: Vec<(&String, &crate::stacks::ResourceRecord)> = v
        .doc
        .resources
        .iter()
        .filter(|(k, _)| logical.is_none_or(|l| l == k.as_str()))
        .collect();
    let each = |o: &mut String, (k, r): &(&String, &crate::stacks::ResourceRecord)| {
        elem(o, "StackName", &v.row.name);
        elem(o, "StackId", &v.row.stack_id);
        elem(o, "LogicalResourceId", k);
        opt_elem(o, "PhysicalResourceId", r.physical_id.as_deref());
        elem(o, "ResourceType", &r.resource_type);
        if one {
            elem(o, "LastUpdatedTimestamp", &timestamp(r.updated_at));
        } else {
            elem(o, "Timestamp", &timestamp(r.updated_at));
        }
        elem(o, "ResourceStatus", &r.status);
        opt_elem(o, "ResourceStatusReason", r.reason.as_deref());
        o.push_str("<DriftInformation><StackResourceDriftStatus>NOT_CHECKED</StackResourceDriftStatus></DriftInformation>");
    };
    let mut out = String::new();
    if one {
        let Some(r) = resources.first() else {
            return Err(QueryError::validation(format!(
                "Resource {} does not exist for stack {}",
                logical.unwrap_or_default(),
                v.row.name
            )));
        };
        out.push_str("<StackResourceDetail>");
        each(&mut out, r);
        out.push_str("</StackResourceDetail>");
    } else {
        members(&mut out, "StackResources", &resources, each);
    }
    Ok(out)
}

async fn list_stack_resources(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let v = named_stack(ctx, p, "ListStackResources").await?;
    let resources: Vec<_> = v.doc.resources.iter().collect();
    let mut out = String::new();
    members(
        &mut out,
        "StackResourceSummaries",
        &resources,
        |o, (k, r)| {
            elem(o, "LogicalResourceId", k);
            opt_elem(o, "PhysicalResourceId", r.physical_id.as_deref());
            elem(o, "ResourceType", &r.resource_type);
            elem(o, "LastUpdatedTimestamp", &timestamp(r.updated_at));
            elem(o, "ResourceStatus", &r.status);
            opt_elem(o, "ResourceStatusReason", r.reason.as_deref());
            o.push_str("<DriftInformation><StackResourceDriftStatus>NOT_CHECKED</StackResourceDriftStatus></DriftInformation>");
        },
    );
    Ok(out)
}

async fn get_template(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let body = if let Some(cs) = p.opt("ChangeSetName") {
        let resource = p
            .opt("StackName")
            .map_or_else(|| "*".to_string(), |n| ctx.stack_resource(n));
        ctx.authorize("GetTemplate", &resource)?;
        ctx.state
            .stacks
            .change_set(ctx.account(), cs, p.opt("StackName"))
            .await?
            .doc
            .template
    } else {
        named_stack(ctx, p, "GetTemplate").await?.doc.template
    };
    let mut out = String::new();
    elem(&mut out, "TemplateBody", &body);
    out.push_str(
        "<StagesAvailable><member>Original</member><member>Processed</member></StagesAvailable>",
    );
    Ok(out)
}

fn summary_xml(out: &mut String, s: &TemplateSummary, full: bool) {
    members(out, "Parameters", &s.parameters, |o, x| {
        elem(o, "ParameterKey", &x.key);
        opt_elem(o, "DefaultValue", x.default.as_deref());
        if full {
            elem(o, "ParameterType", &x.parameter_type);
        }
        elem(o, "NoEcho", if x.no_echo { "true" } else { "false" });
        opt_elem(o, "Description", x.description.as_deref());
        if full && !x.allowed_values.is_empty() {
            o.push_str("<ParameterConstraints>");
            members(o, "AllowedValues", &x.allowed_values, |o, v| {
                o.push_str(&escape(v))
            });
            o.push_str("</ParameterConstraints>");
        }
    });
    opt_elem(out, "Description", s.description.as_deref());
    out.push_str("<Capabilities/><DeclaredTransforms/>");
    if full {
        members(out, "ResourceTypes", &s.resource_types, |o, t| {
            o.push_str(&escape(t))
        });
        opt_elem(out, "Version", s.version.as_deref());
        if let Some(m) = &s.metadata {
            elem(out, "Metadata", &m.to_string());
        }
        let repos: Vec<&String> = s
            .resources
            .iter()
            .filter(|(_, t)| t == crate::stacks::providers::REPOSITORY_TYPE)
            .map(|(l, _)| l)
            .collect();
        if repos.is_empty() {
            out.push_str("<ResourceIdentifierSummaries/>");
        } else {
            out.push_str("<ResourceIdentifierSummaries><member>");
            elem(
                out,
                "ResourceType",
                crate::stacks::providers::REPOSITORY_TYPE,
            );
            members(out, "LogicalResourceIds", &repos, |o, l| {
                o.push_str(&escape(l))
            });
            out.push_str(
                "<ResourceIdentifiers><member>RepositoryName</member></ResourceIdentifiers>",
            );
            out.push_str("</member></ResourceIdentifierSummaries>");
        }
    }
}

async fn get_template_summary(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let body = match (template_body(p)?, p.opt("StackName")) {
        (Some(b), _) => {
            ctx.authorize("GetTemplateSummary", "*")?;
            b
        }
        (None, Some(_)) => {
            named_stack(ctx, p, "GetTemplateSummary")
                .await?
                .doc
                .template
        }
        (None, None) => {
            return Err(QueryError::validation(
                "Either StackName, TemplateBody or TemplateURL must be specified.",
            ));
        }
    };
    let s = ctx.state.stacks.summarize(&body)?;
    let mut out = String::new();
    summary_xml(&mut out, &s, true);
    Ok(out)
}

fn validate_template(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    ctx.authorize("ValidateTemplate", "*")?;
    let Some(body) = template_body(p)? else {
        return Err(QueryError::validation(
            "Either Template URL or Template Body must be specified.",
        ));
    };
    let s = ctx.state.stacks.summarize(&body)?;
    let mut out = String::new();
    summary_xml(&mut out, &s, false);
    Ok(out)
}

fn change_set_name(p: &Params) -> Result<String, QueryError> {
    let name = p.required("ChangeSetName")?;
    let ok = name.starts_with("arn:")
        || (name.len() <= 128
            && name.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    if !ok {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{name}' at 'changeSetName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*"
        )));
    }
    Ok(name.to_string())
}

async fn create_change_set(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let input = stack_input(p)?;
    let name = change_set_name(p)?;
    let ty = p.opt("ChangeSetType").unwrap_or("UPDATE");
    if !["CREATE", "UPDATE"].contains(&ty) {
        return Err(QueryError::validation(format!(
            "1 validation error detected: Value '{ty}' at 'changeSetType' failed to satisfy constraint: Member must satisfy enum value set: [CREATE, UPDATE] (IMPORT is not supported by Berth)"
        )));
    }
    ctx.authorize("CreateChangeSet", &ctx.stack_resource(&input.stack_name))?;
    let (id, stack_id) = ctx
        .state
        .stacks
        .create_change_set(ctx.provisioner().as_ref(), &name, ty, input)
        .await?;
    let mut out = String::new();
    elem(&mut out, "Id", &id);
    elem(&mut out, "StackId", &stack_id);
    Ok(out)
}

/// The change set a call names, once the caller may perform `action` on its stack.
async fn named_change_set(
    ctx: &Ctx<'_>,
    p: &Params,
    action: &str,
) -> Result<ChangeSetView, QueryError> {
    let name = change_set_name(p)?;
    let stack = p.opt("StackName");
    if let Some(s) = stack {
        ctx.authorize(action, &ctx.stack_resource(s))?;
    }
    let cs = ctx
        .state
        .stacks
        .change_set(ctx.account(), &name, stack)
        .await?;
    if stack.is_none() {
        ctx.authorize(action, &cs.row.stack_id)?;
    }
    Ok(cs)
}

async fn describe_change_set(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let cs = named_change_set(ctx, p, "DescribeChangeSet").await?;
    let mut out = String::new();
    elem(&mut out, "ChangeSetName", &cs.row.name);
    elem(&mut out, "ChangeSetId", &cs.row.change_set_id);
    elem(&mut out, "StackId", &cs.row.stack_id);
    elem(&mut out, "StackName", &cs.stack_name);
    opt_elem(&mut out, "Description", cs.doc.description.as_deref());
    parameters_xml(&mut out, &cs.doc.parameters);
    elem(&mut out, "CreationTime", &timestamp(cs.row.created_at));
    elem(&mut out, "ExecutionStatus", &cs.row.execution_status);
    elem(&mut out, "Status", &cs.row.status);
    opt_elem(&mut out, "StatusReason", cs.row.status_reason.as_deref());
    out.push_str("<NotificationARNs/>");
    members(&mut out, "Capabilities", &cs.doc.capabilities, |o, c| {
        o.push_str(&escape(c))
    });
    tags_xml(&mut out, &cs.doc.tags);
    members(&mut out, "Changes", &cs.doc.changes, |o, c| {
        elem(o, "Type", "Resource");
        o.push_str("<ResourceChange>");
        elem(o, "Action", &c.action);
        elem(o, "LogicalResourceId", &c.logical_id);
        opt_elem(o, "PhysicalResourceId", c.physical_id.as_deref());
        elem(o, "ResourceType", &c.resource_type);
        opt_elem(o, "Replacement", c.replacement.as_deref());
        members(o, "Scope", &c.scope, |o, s| o.push_str(&escape(s)));
        members(o, "Details", &c.details, |o, d| {
            o.push_str("<Target>");
            elem(o, "Attribute", &d.attribute);
            opt_elem(o, "Name", d.name.as_deref());
            elem(o, "RequiresRecreation", &d.requires_recreation);
            o.push_str("</Target>");
            elem(o, "Evaluation", &d.evaluation);
            elem(o, "ChangeSource", &d.change_source);
        });
        o.push_str("</ResourceChange>");
    });
    out.push_str("<IncludeNestedStacks>false</IncludeNestedStacks>");
    Ok(out)
}

async fn list_change_sets(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let v = named_stack(ctx, p, "ListChangeSets").await?;
    let sets = ctx
        .state
        .stacks
        .change_sets(ctx.account(), &v.row.stack_id)
        .await?;
    let mut out = String::new();
    members(&mut out, "Summaries", &sets, |o, cs| {
        elem(o, "StackId", &cs.row.stack_id);
        elem(o, "StackName", &cs.stack_name);
        elem(o, "ChangeSetId", &cs.row.change_set_id);
        elem(o, "ChangeSetName", &cs.row.name);
        elem(o, "ExecutionStatus", &cs.row.execution_status);
        elem(o, "Status", &cs.row.status);
        opt_elem(o, "StatusReason", cs.row.status_reason.as_deref());
        elem(o, "CreationTime", &timestamp(cs.row.created_at));
        opt_elem(o, "Description", cs.doc.description.as_deref());
        o.push_str("<IncludeNestedStacks>false</IncludeNestedStacks>");
    });
    Ok(out)
}

async fn execute_change_set(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    refuse_unsupported(p)?;
    let cs = named_change_set(ctx, p, "ExecuteChangeSet").await?;
    ctx.state
        .stacks
        .execute_change_set(
            ctx.provisioner(),
            &cs.row.change_set_id,
            None,
            p.bool("DisableRollback")?,
        )
        .await?;
    Ok(String::new())
}

async fn delete_change_set(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let cs = named_change_set(ctx, p, "DeleteChangeSet").await?;
    ctx.state
        .stacks
        .delete_change_set(ctx.account(), &cs.row.change_set_id, None)
        .await?;
    Ok(String::new())
}

async fn list_exports(ctx: &Ctx<'_>) -> Result<String, QueryError> {
    ctx.authorize("ListExports", "*")?;
    let exports = ctx.state.stacks.list_exports(ctx.account()).await?;
    let mut out = String::new();
    members(&mut out, "Exports", &exports, |o, (stack, name, value)| {
        elem(o, "ExportingStackId", stack);
        elem(o, "Name", name);
        elem(o, "Value", value);
    });
    Ok(out)
}

async fn list_imports(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    ctx.authorize("ListImports", "*")?;
    let name = p.required("ExportName")?.to_string();
    let users = ctx
        .state
        .stacks
        .importers(ctx.account(), std::slice::from_ref(&name), None)
        .await?;
    if users.is_empty() {
        return Err(QueryError::validation(format!(
            "Export '{name}' is not imported by any stack."
        )));
    }
    let mut out = String::new();
    members(&mut out, "Imports", &users, |o, (_, stack)| {
        o.push_str(&escape(stack))
    });
    Ok(out)
}

async fn update_termination_protection(ctx: &Ctx<'_>, p: &Params) -> Result<String, QueryError> {
    let name = stack_name(p)?;
    let enabled = p.bool("EnableTerminationProtection")?.ok_or_else(|| {
        QueryError::validation(
            "1 validation error detected: Value null at 'enableTerminationProtection' failed to satisfy constraint: Member must not be null",
        )
    })?;
    ctx.authorize("UpdateTerminationProtection", &ctx.stack_resource(&name))?;
    let id = ctx
        .state
        .stacks
        .set_termination_protection(ctx.account(), &name, enabled)
        .await?;
    Ok(format!("<StackId>{}</StackId>", escape(&id)))
}
