//! IAM: the AWS policy language and its evaluation, for ECR authorization.
//!
//! This module owns:
//! - the policy document model and grammar ([`Policy::parse`], for identity
//!   policies and for resource policies: repository and registry policies);
//! - evaluation of one policy ([`Policy::evaluate`]) and the whole decision
//!   for a request ([`authorize`]);
//! - the ECR action catalogue ([`ECR_ACTIONS`], [`is_known_ecr_action`]).
//!
//! It is pure: no I/O and no clock; the caller supplies the principal, the
//! action, the resource ARN, the current time and other condition keys in a
//! [`RequestContext`]. Storing policies and mapping HTTP requests to actions
//! belong to the callers.
//!
//! # Evaluation order
//!
//! For each policy, a statement applies when its action, resource,
//! principal (resource policies only) and every condition match; variables
//! such as `${aws:username}` are substituted first when `Version` is
//! `2012-10-17`. Then, across all policies ([`authorize`]):
//!
//! 1. an explicit `Deny` anywhere wins;
//! 2. the caller's identity side allows if an identity policy allows, or the
//!    caller is an account root user (root is implicitly allowed everything
//!    unless a policy explicitly denies it);
//! 3. same-account request: identity side allows, or a resource policy allows
//!    naming the caller itself (ARN, `"*"`, `NotPrincipal`); naming only the
//!    account delegates to identity policies, as in AWS;
//! 4. cross-account request: both the identity side and a resource policy
//!    (naming the caller or its account) must allow;
//! 5. otherwise implicit deny ([`Decision::NotApplicable`]).
//!
//! The ECR administrator credential is expected to be the account root
//! principal (`arn:aws:iam::<account>:root`) and needs no identity policy.

mod condition;
mod eval;
mod pattern;
mod policy;
mod values;

#[cfg(test)]
mod tests;

pub use eval::{Decision, Principal, RequestContext, authorize, authorize_key};
pub use policy::{
    ActionClause, BaseOperator, ConditionBlock, ConditionEntry, ConditionOperator, Effect, Policy,
    PolicyError, PolicyKind, PolicyVersion, PrincipalClause, PrincipalSet, ResourceClause,
    SetQualifier, Statement,
};

/// The IAM actions of the 58 ECR API operations (`ecr:` + operation name),
/// from the botocore model `ecr/2015-09-21`.
pub const ECR_ACTIONS: &[&str] = &[
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchDeleteImage",
    "ecr:BatchGetImage",
    "ecr:BatchGetRepositoryScanningConfiguration",
    "ecr:CompleteLayerUpload",
    "ecr:CreatePullThroughCacheRule",
    "ecr:CreateRepository",
    "ecr:CreateRepositoryCreationTemplate",
    "ecr:DeleteLifecyclePolicy",
    "ecr:DeletePullThroughCacheRule",
    "ecr:DeleteRegistryPolicy",
    "ecr:DeleteRepository",
    "ecr:DeleteRepositoryCreationTemplate",
    "ecr:DeleteRepositoryPolicy",
    "ecr:DeleteSigningConfiguration",
    "ecr:DeregisterPullTimeUpdateExclusion",
    "ecr:DescribeImageReplicationStatus",
    "ecr:DescribeImageScanFindings",
    "ecr:DescribeImageSigningStatus",
    "ecr:DescribeImages",
    "ecr:DescribePullThroughCacheRules",
    "ecr:DescribeRegistry",
    "ecr:DescribeRepositories",
    "ecr:DescribeRepositoryCreationTemplates",
    "ecr:GetAccountSetting",
    "ecr:GetAuthorizationToken",
    "ecr:GetDownloadUrlForLayer",
    "ecr:GetLifecyclePolicy",
    "ecr:GetLifecyclePolicyPreview",
    "ecr:GetRegistryPolicy",
    "ecr:GetRegistryScanningConfiguration",
    "ecr:GetRepositoryPolicy",
    "ecr:GetSigningConfiguration",
    "ecr:InitiateLayerUpload",
    "ecr:ListImageReferrers",
    "ecr:ListImages",
    "ecr:ListPullTimeUpdateExclusions",
    "ecr:ListTagsForResource",
    "ecr:PutAccountSetting",
    "ecr:PutImage",
    "ecr:PutImageScanningConfiguration",
    "ecr:PutImageTagMutability",
    "ecr:PutLifecyclePolicy",
    "ecr:PutRegistryPolicy",
    "ecr:PutRegistryScanningConfiguration",
    "ecr:PutReplicationConfiguration",
    "ecr:PutSigningConfiguration",
    "ecr:RegisterPullTimeUpdateExclusion",
    "ecr:SetRepositoryPolicy",
    "ecr:StartImageScan",
    "ecr:StartLifecyclePolicyPreview",
    "ecr:TagResource",
    "ecr:UntagResource",
    "ecr:UpdateImageStorageClass",
    "ecr:UpdatePullThroughCacheRule",
    "ecr:UpdateRepositoryCreationTemplate",
    "ecr:UploadLayerPart",
    "ecr:ValidatePullThroughCacheRule",
];

/// Permission-only ECR actions with no API operation: importing an upstream
/// image through a pull-through cache rule, and replicating into a registry.
pub const ECR_PERMISSION_ONLY_ACTIONS: &[&str] =
    &["ecr:BatchImportUpstreamImage", "ecr:ReplicateImage"];

/// Whether `pattern` is acceptable as an `Action`/`NotAction` entry of an ECR
/// resource policy: a known ECR action (case-insensitive, including the
/// permission-only ones), or a wildcard pattern (`*`, `ecr:*`, `ecr:Get*`,
/// `ecr:?utImage`) that matches at least one of them.
pub fn is_known_ecr_action(pattern: &str) -> bool {
    ECR_ACTIONS
        .iter()
        .chain(ECR_PERMISSION_ONLY_ACTIONS)
        .any(|action| pattern::action_matches(pattern, action))
}
