//! Data-driven tests of the IAM module: whole-request decisions, condition
//! operators, parse errors, and the helpers underneath.

use std::collections::HashMap;

use super::values::{format_iso8601, parse_cidr, parse_date_millis};
use super::*;

const ACCT: &str = "111111111111";
const OTHER: &str = "222222222222";
const REPO: &str = "arn:aws:ecr:us-east-1:111111111111:repository/team/app";
/// 2026-03-01T00:00:00Z
const NOW: i64 = 1_772_323_200;

#[derive(Debug, Clone, Copy)]
enum Who {
    Alice,
    Bob,
    Root,
    Carol,
    OtherRoot,
    Service,
    RoleSession,
}

fn principal(who: Who) -> Principal {
    let (arn, account, user_id, username) = match who {
        Who::Alice => (
            "arn:aws:iam::111111111111:user/alice",
            ACCT,
            "AIDAALICE",
            Some("alice"),
        ),
        Who::Bob => (
            "arn:aws:iam::111111111111:user/bob",
            ACCT,
            "AIDABOB",
            Some("bob"),
        ),
        Who::Root => ("arn:aws:iam::111111111111:root", ACCT, ACCT, None),
        Who::Carol => (
            "arn:aws:iam::222222222222:user/carol",
            OTHER,
            "AIDACAROL",
            Some("carol"),
        ),
        Who::OtherRoot => ("arn:aws:iam::222222222222:root", OTHER, OTHER, None),
        Who::Service => ("replication.ecr.amazonaws.com", "", "", None),
        Who::RoleSession => (
            "arn:aws:sts::111111111111:assumed-role/deployer/ci-42",
            ACCT,
            "AROADEPLOYER:ci-42",
            None,
        ),
    };
    Principal {
        arn: arn.into(),
        account: account.into(),
        user_id: user_id.into(),
        username: username.map(Into::into),
    }
}

type Extra = &'static [(&'static str, &'static [&'static str])];

struct Env {
    who: Who,
    action: &'static str,
    arn: &'static str,
    ip: Option<&'static str>,
    secure: bool,
    now: i64,
    extra: Extra,
}

const ENV: Env = Env {
    who: Who::Alice,
    action: "ecr:BatchGetImage",
    arn: REPO,
    ip: None,
    secure: true,
    now: NOW,
    extra: &[],
};

fn with_ctx<T>(env: &Env, f: impl FnOnce(&RequestContext<'_>) -> T) -> T {
    let p = principal(env.who);
    let extra: HashMap<String, Vec<String>> = env
        .extra
        .iter()
        .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
        .collect();
    let resource_account = env.arn.split(':').nth(4).unwrap_or(ACCT);
    let ctx = RequestContext {
        principal: &p,
        action: env.action,
        resource: env.arn,
        resource_account,
        source_ip: env.ip.map(|ip| ip.parse().unwrap()),
        secure_transport: env.secure,
        current_time_epoch: env.now,
        extra: &extra,
    };
    f(&ctx)
}

fn parse_all(texts: &[&str], kind: PolicyKind) -> Vec<Policy> {
    texts
        .iter()
        .map(|t| Policy::parse(t, kind).unwrap_or_else(|e| panic!("{e}\n{t}")))
        .collect()
}

// ---------------------------------------------------------------------------
// Whole-request decisions.

struct AuthCase {
    name: &'static str,
    identity: &'static [&'static str],
    resource: &'static [&'static str],
    env: Env,
    expect: Decision,
}

const ALLOW_PULL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"],"Resource":"*"}]}"#;
const ALLOW_ALL_ECR: &str =
    r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"*"}}"#;
const DENY_PULL: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecr:BatchGetImage","Resource":"*"}}"#;
const REPO_ALLOW_ALICE: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"a","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:user/alice"},"Action":"ecr:BatchGetImage"}]}"#;
const REPO_ALLOW_ACCT_B: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"222222222222"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#;

const AUTH_CASES: &[AuthCase] = &[
    AuthCase {
        name: "default deny without any policy",
        identity: &[],
        resource: &[],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "identity policy allows the action",
        identity: &[ALLOW_PULL],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "identity policy for other actions only",
        identity: &[ALLOW_PULL],
        resource: &[],
        env: Env {
            action: "ecr:PutImage",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "explicit deny in an identity policy beats an allow in another",
        identity: &[ALLOW_ALL_ECR, DENY_PULL],
        resource: &[],
        env: ENV,
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "explicit deny in the same policy beats allow",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"ecr:BatchGetImage","Resource":"*"}]}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "explicit deny in the repository policy beats identity allow",
        identity: &[ALLOW_ALL_ECR],
        resource: &[
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"ecr:BatchGetImage"}}"#,
        ],
        env: ENV,
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "explicit deny in identity beats repository allow",
        identity: &[DENY_PULL],
        resource: &[REPO_ALLOW_ALICE],
        env: ENV,
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "deny in registry policy beats allow in repository policy",
        identity: &[],
        resource: &[
            REPO_ALLOW_ALICE,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/*"}}"#,
        ],
        env: ENV,
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "same account: repository policy naming the user alone suffices",
        identity: &[],
        resource: &[REPO_ALLOW_ALICE],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "same account: repository policy for another user does not apply",
        identity: &[],
        resource: &[REPO_ALLOW_ALICE],
        env: Env {
            who: Who::Bob,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "same account: Principal * alone suffices",
        identity: &[],
        resource: &[
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#,
        ],
        env: Env {
            who: Who::Bob,
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "same account: naming only the account delegates to identity policies",
        identity: &[],
        resource: &[
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"ecr:*"}]}"#,
        ],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "same account: account-named policy plus identity allow",
        identity: &[ALLOW_PULL],
        resource: &[
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"111111111111"},"Action":"ecr:*"}]}"#,
        ],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "cross account: repository policy alone is not enough",
        identity: &[],
        resource: &[REPO_ALLOW_ACCT_B],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "cross account: identity policy alone is not enough",
        identity: &[ALLOW_ALL_ECR],
        resource: &[],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "cross account: both sides allow",
        identity: &[ALLOW_ALL_ECR],
        resource: &[REPO_ALLOW_ACCT_B],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "cross account: user named directly plus identity allow",
        identity: &[ALLOW_PULL],
        resource: &[
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::333333333333:root","arn:aws:iam::222222222222:user/carol"]},"Action":"ecr:BatchGetImage"}]}"#,
        ],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "cross account: repository policy names a different account",
        identity: &[ALLOW_ALL_ECR],
        resource: &[
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"333333333333"},"Action":"ecr:*"}]}"#,
        ],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "cross account: action outside the repository grant",
        identity: &[ALLOW_ALL_ECR],
        resource: &[REPO_ALLOW_ACCT_B],
        env: Env {
            who: Who::Carol,
            action: "ecr:PutImage",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "root of the resource account needs no policy",
        identity: &[],
        resource: &[],
        env: Env {
            who: Who::Root,
            action: "ecr:DeleteRepository",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "root is stopped by an explicit deny in the repository policy",
        identity: &[],
        resource: &[
            r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"111111111111"},"Action":"ecr:DeleteRepository"}]}"#,
        ],
        env: Env {
            who: Who::Root,
            action: "ecr:DeleteRepository",
            ..ENV
        },
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "root of another account needs the repository policy",
        identity: &[],
        resource: &[],
        env: Env {
            who: Who::OtherRoot,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "root of another account with a repository grant to its account",
        identity: &[],
        resource: &[REPO_ALLOW_ACCT_B],
        env: Env {
            who: Who::OtherRoot,
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "NotAction allows everything else",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"ecr:Delete*","Resource":"*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "NotAction excludes the listed actions",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"ecr:Delete*","Resource":"*"}}"#,
        ],
        resource: &[],
        env: Env {
            action: "ecr:DeleteRepository",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "NotResource deny hits repositories outside team/",
        identity: &[
            ALLOW_ALL_ECR,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:*:111111111111:repository/team/*"}}"#,
        ],
        resource: &[],
        env: Env {
            arn: "arn:aws:ecr:us-east-1:111111111111:repository/other",
            ..ENV
        },
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "NotResource deny spares team/ repositories",
        identity: &[
            ALLOW_ALL_ECR,
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"ecr:*","NotResource":"arn:aws:ecr:*:111111111111:repository/team/*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "NotPrincipal deny hits everyone but alice",
        identity: &[ALLOW_ALL_ECR],
        resource: &[
            r#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111111111111:user/alice"},"Action":"ecr:*"}}"#,
        ],
        env: Env {
            who: Who::Bob,
            ..ENV
        },
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "NotPrincipal deny spares alice",
        identity: &[ALLOW_ALL_ECR],
        resource: &[
            r#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111111111111:user/alice"},"Action":"ecr:*"}}"#,
        ],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "action wildcards are case-insensitive",
        identity: &[r#"{"Statement":{"Effect":"Allow","Action":"ECR:get*","Resource":"*"}}"#],
        resource: &[],
        env: Env {
            action: "ecr:GetAuthorizationToken",
            arn: "*",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "action ? wildcard matches one character",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:Batch?etImage","Resource":"*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "action wildcard does not match a different prefix",
        identity: &[r#"{"Statement":{"Effect":"Allow","Action":"ecr:Get*","Resource":"*"}}"#],
        resource: &[],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "resource wildcard spans / in the resource segment",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "resource matching is case-sensitive",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/Team/*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "resource wildcards per ARN component (region and account)",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/team/a?p"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "resource without wildcard matches exactly",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/team"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "a region wildcard for another region",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":["arn:aws:ecr:eu-*:*:repository/*","arn:aws:ecr:us-east-1:222222222222:*"]}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "Resource * matches the resource-less GetAuthorizationToken",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:GetAuthorizationToken","Resource":"*"}}"#,
        ],
        resource: &[],
        env: Env {
            action: "ecr:GetAuthorizationToken",
            arn: "*",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "a repository ARN pattern does not match resource *",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/*"}}"#,
        ],
        resource: &[],
        env: Env {
            action: "ecr:GetAuthorizationToken",
            arn: "*",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "policy variables in Resource: own prefix",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:${aws:PrincipalAccount}:repository/${aws:username}/*"}}"#,
        ],
        resource: &[],
        env: Env {
            arn: "arn:aws:ecr:us-east-1:111111111111:repository/alice/app",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "policy variables in Resource: someone else's prefix",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:${aws:PrincipalAccount}:repository/${aws:username}/*"}}"#,
        ],
        resource: &[],
        env: Env {
            arn: "arn:aws:ecr:us-east-1:111111111111:repository/bob/app",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "policy variables are literal text in Version 2008-10-17",
        identity: &[
            r#"{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/${aws:username}/*"}}"#,
        ],
        resource: &[],
        env: Env {
            arn: "arn:aws:ecr:us-east-1:111111111111:repository/alice/app",
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "policy variable default value when the key is absent",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/${aws:username, 'shared'}/*"}}"#,
        ],
        resource: &[],
        env: Env {
            who: Who::RoleSession,
            arn: "arn:aws:ecr:us-east-1:111111111111:repository/shared/app",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "policy variable without value and default matches nothing",
        identity: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/${aws:username}*"}}"#,
        ],
        resource: &[],
        env: Env {
            who: Who::RoleSession,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "resource policy naming a role allows its sessions",
        identity: &[],
        resource: &[
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:role/deployer"},"Action":"ecr:PutImage"}}"#,
        ],
        env: Env {
            who: Who::RoleSession,
            action: "ecr:PutImage",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "Service principal granted by a registry policy",
        identity: &[],
        resource: &[
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"replication.ecr.amazonaws.com"},"Action":"ecr:ReplicateImage","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/*"}}"#,
        ],
        env: Env {
            who: Who::Service,
            action: "ecr:ReplicateImage",
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "AWS principals never match a service",
        identity: &[],
        resource: &[REPO_ALLOW_ACCT_B, REPO_ALLOW_ALICE],
        env: Env {
            who: Who::Service,
            ..ENV
        },
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "Service principal entries never match users",
        identity: &[],
        resource: &[
            r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"replication.ecr.amazonaws.com"},"Action":"ecr:*"}}"#,
        ],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "resource policy Resource naming another repository",
        identity: &[],
        resource: &[
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:111111111111:repository/other"}}"#,
        ],
        env: ENV,
        expect: Decision::NotApplicable,
    },
    AuthCase {
        name: "cross account with a PrincipalAccount condition in the repository policy",
        identity: &[ALLOW_PULL],
        resource: &[
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage","Condition":{"StringEquals":{"aws:PrincipalAccount":["222222222222","333333333333"]}}}}"#,
        ],
        env: Env {
            who: Who::Carol,
            ..ENV
        },
        expect: Decision::Allow,
    },
    AuthCase {
        name: "deny whose condition does not hold is ignored",
        identity: &[
            ALLOW_PULL,
            r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
    AuthCase {
        name: "deny whose condition holds applies",
        identity: &[
            ALLOW_PULL,
            r#"{"Statement":{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":false}}}}"#,
        ],
        resource: &[],
        env: Env {
            secure: false,
            ..ENV
        },
        expect: Decision::ExplicitDeny,
    },
    AuthCase {
        name: "identity policies may name non-ECR actions",
        identity: &[
            r#"{"Statement":{"Effect":"Allow","Action":["s3:GetObject","ecr:*"],"Resource":"*"}}"#,
        ],
        resource: &[],
        env: ENV,
        expect: Decision::Allow,
    },
];

#[test]
fn authorize_cases() {
    let mut failures = Vec::new();
    for case in AUTH_CASES {
        let identity = parse_all(case.identity, PolicyKind::Identity);
        let resource = parse_all(case.resource, PolicyKind::Resource);
        let got = with_ctx(&case.env, |ctx| authorize(&identity, &resource, ctx));
        if got != case.expect {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                case.name, case.expect, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Condition operators: each case wraps `cond` into an identity policy that
// allows everything, so the condition alone decides.

struct CondCase {
    cond: &'static str,
    env: Env,
    expect: bool,
}

const fn c(cond: &'static str, expect: bool) -> CondCase {
    CondCase {
        cond,
        env: ENV,
        expect,
    }
}

const fn ce(cond: &'static str, env: Env, expect: bool) -> CondCase {
    CondCase { cond, env, expect }
}

const fn x(extra: Extra) -> Env {
    Env { extra, ..ENV }
}

const fn ip(addr: &'static str) -> Env {
    Env {
        ip: Some(addr),
        ..ENV
    }
}

const COND_CASES: &[CondCase] = &[
    // String operators.
    c(r#"{"StringEquals":{"aws:username":"alice"}}"#, true),
    c(r#"{"StringEquals":{"aws:username":"bob"}}"#, false),
    c(r#"{"StringEquals":{"aws:username":"Alice"}}"#, false),
    c(r#"{"StringEquals":{"aws:username":["bob","alice"]}}"#, true),
    c(r#"{"StringEquals":{"AWS:USERNAME":"alice"}}"#, true),
    c(r#"{"stringequals":{"aws:username":"alice"}}"#, true),
    c(r#"{"StringEquals":{"ecr:ResourceTag/env":"prod"}}"#, false),
    c(r#"{"StringNotEquals":{"aws:username":"bob"}}"#, true),
    c(
        r#"{"StringNotEquals":{"aws:username":["bob","alice"]}}"#,
        false,
    ),
    c(
        r#"{"StringNotEquals":{"ecr:ResourceTag/env":"prod"}}"#,
        true,
    ),
    c(
        r#"{"StringEqualsIgnoreCase":{"aws:username":"ALICE"}}"#,
        true,
    ),
    c(
        r#"{"StringNotEqualsIgnoreCase":{"aws:username":"ALICE"}}"#,
        false,
    ),
    c(
        r#"{"StringNotEqualsIgnoreCase":{"aws:username":"BOB"}}"#,
        true,
    ),
    c(
        r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/a*"}}"#,
        true,
    ),
    c(r#"{"StringLike":{"aws:username":"al?ce"}}"#, true),
    c(r#"{"StringLike":{"aws:username":"A*"}}"#, false),
    c(
        r#"{"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/a*"}}"#,
        false,
    ),
    c(r#"{"StringNotLike":{"aws:username":"b*"}}"#, true),
    // Several keys in one operator, and several operators, are ANDed.
    c(
        r#"{"StringEquals":{"aws:username":"alice","aws:PrincipalAccount":"222222222222"}}"#,
        false,
    ),
    c(
        r#"{"StringEquals":{"aws:username":"alice","aws:PrincipalAccount":"111111111111"}}"#,
        true,
    ),
    c(
        r#"{"StringEquals":{"aws:username":"alice"},"Bool":{"aws:SecureTransport":"false"}}"#,
        false,
    ),
    // Context keys.
    c(r#"{"StringEquals":{"aws:userid":"AIDAALICE"}}"#, true),
    c(r#"{"StringEquals":{"aws:PrincipalType":"User"}}"#, true),
    ce(
        r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#,
        Env {
            who: Who::Root,
            ..ENV
        },
        true,
    ),
    ce(
        r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111111111111:role/deployer"}}"#,
        Env {
            who: Who::RoleSession,
            ..ENV
        },
        true,
    ),
    c(
        r#"{"StringEquals":{"aws:CurrentTime":"2026-03-01T00:00:00Z"}}"#,
        true,
    ),
    ce(
        r#"{"StringEquals":{"ecr:resourcetag/ENV":"prod"}}"#,
        x(&[("ecr:ResourceTag/env", &["prod"])]),
        true,
    ),
    // Policy variables and escapes in condition values.
    ce(
        r#"{"StringEquals":{"ecr:ResourceTag/owner":"${aws:username}"}}"#,
        x(&[("ecr:ResourceTag/owner", &["alice"])]),
        true,
    ),
    ce(
        r#"{"StringEquals":{"ecr:ResourceTag/owner":"${aws:username}"}}"#,
        x(&[("ecr:ResourceTag/owner", &["bob"])]),
        false,
    ),
    ce(
        r#"{"StringLike":{"ecr:ResourceTag/owner":"a${*}"}}"#,
        x(&[("ecr:ResourceTag/owner", &["a*"])]),
        true,
    ),
    ce(
        r#"{"StringLike":{"ecr:ResourceTag/owner":"a${*}"}}"#,
        x(&[("ecr:ResourceTag/owner", &["ab"])]),
        false,
    ),
    // ARN operators (both Equals and Like take wildcards, per component).
    c(
        r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111111111111:user/alice"}}"#,
        true,
    ),
    c(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111111111111:user/*"}}"#,
        true,
    ),
    c(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam:*:111111111111:user/alice"}}"#,
        true,
    ),
    c(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}"#,
        false,
    ),
    c(
        r#"{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::111111111111:user/alice"}}"#,
        false,
    ),
    c(
        r#"{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::222222222222:*"}}"#,
        true,
    ),
    // Numeric operators.
    ce(
        r#"{"NumericEquals":{"ecr:Count":"5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericEquals":{"ecr:Count":5.0}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericNotEquals":{"ecr:Count":"5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        false,
    ),
    ce(
        r#"{"NumericLessThan":{"ecr:Count":"10"}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericLessThan":{"ecr:Count":"5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        false,
    ),
    ce(
        r#"{"NumericLessThanEquals":{"ecr:Count":"5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericGreaterThan":{"ecr:Count":"5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        false,
    ),
    ce(
        r#"{"NumericGreaterThan":{"ecr:Count":"4.5"}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericGreaterThanEquals":{"ecr:Count":5}}"#,
        x(&[("ecr:Count", &["5"])]),
        true,
    ),
    ce(
        r#"{"NumericLessThan":{"ecr:Count":"10"}}"#,
        x(&[("ecr:Count", &["abc"])]),
        false,
    ),
    ce(
        r#"{"NumericNotEquals":{"ecr:Count":"10"}}"#,
        x(&[("ecr:Count", &["abc"])]),
        false,
    ),
    // Date operators against aws:CurrentTime / aws:EpochTime.
    c(
        r#"{"DateLessThan":{"aws:CurrentTime":"2026-06-01T00:00:00Z"}}"#,
        true,
    ),
    c(
        r#"{"DateLessThan":{"aws:CurrentTime":"2026-01-01T00:00:00Z"}}"#,
        false,
    ),
    c(
        r#"{"DateLessThan":{"aws:CurrentTime":"2026-03-01T00:00:00Z"}}"#,
        false,
    ),
    c(
        r#"{"DateLessThanEquals":{"aws:CurrentTime":1772323200}}"#,
        true,
    ),
    c(
        r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-06-01"}}"#,
        false,
    ),
    c(
        r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-03-01T01:00:00+02:00"}}"#,
        true,
    ),
    c(
        r#"{"DateGreaterThanEquals":{"aws:CurrentTime":"2026-03-01T00:00:00.000Z"}}"#,
        true,
    ),
    c(
        r#"{"DateEquals":{"aws:CurrentTime":"2026-03-01T00:00:00Z"}}"#,
        true,
    ),
    c(
        r#"{"DateNotEquals":{"aws:CurrentTime":"2026-03-01T00:00:00Z"}}"#,
        false,
    ),
    c(
        r#"{"DateGreaterThan":{"aws:EpochTime":"2026-01-01T00:00:00Z"}}"#,
        true,
    ),
    ce(
        r#"{"DateLessThan":{"aws:CurrentTime":"2026-06-01T00:00:00Z"}}"#,
        Env {
            now: 1_780_272_000, // 2026-06-01T00:00:00Z
            ..ENV
        },
        false,
    ),
    // Bool.
    c(r#"{"Bool":{"aws:SecureTransport":"true"}}"#, true),
    c(r#"{"Bool":{"aws:SecureTransport":true}}"#, true),
    c(r#"{"Bool":{"aws:SecureTransport":"false"}}"#, false),
    ce(
        r#"{"Bool":{"aws:SecureTransport":"False"}}"#,
        Env {
            secure: false,
            ..ENV
        },
        true,
    ),
    c(r#"{"Bool":{"ecr:Missing":"false"}}"#, false),
    // IP addresses.
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        ip("10.1.2.3"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        ip("192.168.1.1"),
        false,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":["192.0.2.0/24","10.0.0.0/8"]}}"#,
        ip("10.9.9.9"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"203.0.113.7"}}"#,
        ip("203.0.113.7"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"203.0.113.7"}}"#,
        ip("203.0.113.8"),
        false,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}"#,
        ip("198.51.100.1"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#,
        ip("2001:db8:1::1"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#,
        ip("2001:db9::1"),
        false,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"2001:db8::/32"}}"#,
        ip("10.1.2.3"),
        false,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        ip("::ffff:10.0.0.1"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"192.168.0.0/23"}}"#,
        ip("192.168.1.200"),
        true,
    ),
    ce(
        r#"{"IpAddress":{"aws:SourceIp":"192.168.0.0/23"}}"#,
        ip("192.168.2.1"),
        false,
    ),
    c(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, false),
    ce(
        r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        ip("192.168.1.1"),
        true,
    ),
    ce(
        r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        ip("10.0.0.1"),
        false,
    ),
    ce(
        r#"{"NotIpAddress":{"aws:SourceIp":"fd00::/8"}}"#,
        ip("fd12::1"),
        false,
    ),
    c(r#"{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#, true),
    // ...IfExists.
    c(
        r#"{"StringEqualsIfExists":{"ecr:ResourceTag/env":"prod"}}"#,
        true,
    ),
    ce(
        r#"{"StringEqualsIfExists":{"ecr:ResourceTag/env":"prod"}}"#,
        x(&[("ecr:ResourceTag/env", &["dev"])]),
        false,
    ),
    ce(
        r#"{"StringEqualsIfExists":{"ecr:ResourceTag/env":"prod"}}"#,
        x(&[("ecr:ResourceTag/env", &["prod"])]),
        true,
    ),
    c(r#"{"NumericLessThanIfExists":{"ecr:Count":"3"}}"#, true),
    c(
        r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#,
        true,
    ),
    // Null.
    c(r#"{"Null":{"ecr:ResourceTag/env":"true"}}"#, true),
    ce(
        r#"{"Null":{"ecr:ResourceTag/env":"true"}}"#,
        x(&[("ecr:ResourceTag/env", &["x"])]),
        false,
    ),
    ce(
        r#"{"Null":{"ecr:ResourceTag/env":false}}"#,
        x(&[("ecr:ResourceTag/env", &["x"])]),
        true,
    ),
    c(r#"{"Null":{"aws:SourceIp":"false"}}"#, false),
    ce(
        r#"{"Null":{"ecr:ResourceTag/env":"true"}}"#,
        x(&[("ecr:ResourceTag/env", &[])]),
        true,
    ),
    // Set qualifiers on multi-valued keys.
    ce(
        r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        x(&[("aws:TagKeys", &["c", "a"])]),
        true,
    ),
    ce(
        r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        x(&[("aws:TagKeys", &["c"])]),
        false,
    ),
    c(
        r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        false,
    ),
    c(
        r#"{"ForAnyValue:StringEqualsIfExists":{"aws:TagKeys":["a"]}}"#,
        true,
    ),
    ce(
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        x(&[("aws:TagKeys", &["b", "a"])]),
        true,
    ),
    ce(
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        x(&[("aws:TagKeys", &["a", "c"])]),
        false,
    ),
    c(
        r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["a","b"]}}"#,
        true,
    ),
    ce(
        r#"{"ForAllValues:StringLike":{"aws:TagKeys":"team-*"}}"#,
        x(&[("aws:TagKeys", &["team-a", "team-b"])]),
        true,
    ),
    ce(
        r#"{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"a"}}"#,
        x(&[("aws:TagKeys", &["a", "b"])]),
        true,
    ),
    ce(
        r#"{"ForAllValues:StringNotEquals":{"aws:TagKeys":"a"}}"#,
        x(&[("aws:TagKeys", &["a", "b"])]),
        false,
    ),
    ce(
        r#"{"ForAllValues:StringNotEquals":{"aws:TagKeys":"x"}}"#,
        x(&[("aws:TagKeys", &["a", "b"])]),
        true,
    ),
    ce(
        r#"{"StringEquals":{"aws:TagKeys":"a"}}"#,
        x(&[("aws:TagKeys", &["b", "a"])]),
        true,
    ),
    ce(
        r#"{"StringNotEquals":{"aws:TagKeys":"a"}}"#,
        x(&[("aws:TagKeys", &["b", "a"])]),
        false,
    ),
];

#[test]
fn condition_cases() {
    let mut failures = Vec::new();
    for case in COND_CASES {
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}}}"#,
            case.cond
        );
        let policy = match Policy::parse(&text, PolicyKind::Identity) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: parse error {e}", case.cond));
                continue;
            }
        };
        let got = with_ctx(&case.env, |ctx| policy.evaluate(ctx, PolicyKind::Identity));
        let want = if case.expect {
            Decision::Allow
        } else {
            Decision::NotApplicable
        };
        if got != want {
            failures.push(format!(
                "{} (ip {:?}, extra {:?}): expected {want:?}, got {got:?}",
                case.cond, case.env.ip, case.env.extra
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Parse errors.

struct ParseCase {
    name: &'static str,
    kind: PolicyKind,
    text: &'static str,
    /// `None`: must parse; `Some(s)`: the error's text must contain `s`.
    error: Option<&'static str>,
}

const fn ok(name: &'static str, kind: PolicyKind, text: &'static str) -> ParseCase {
    ParseCase {
        name,
        kind,
        text,
        error: None,
    }
}

const fn bad(
    name: &'static str,
    kind: PolicyKind,
    text: &'static str,
    error: &'static str,
) -> ParseCase {
    ParseCase {
        name,
        kind,
        text,
        error: Some(error),
    }
}

use PolicyKind::{Identity as I, Resource as R};

const PARSE_CASES: &[ParseCase] = &[
    ok(
        "minimal identity",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
    ),
    ok(
        "resource policy without Resource",
        R,
        r#"{"Version":"2008-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":["123456789012","arn:aws:iam::123456789012:user/alice"]},"Action":["ecr:BatchGetImage","ecr:Get*","ecr:*"]}]}"#,
    ),
    ok(
        "resource policy may repeat Sids",
        R,
        r#"{"Statement":[{"Sid":"s","Effect":"Allow","Principal":"*","Action":"ecr:ListImages"},{"Sid":"s","Effect":"Deny","Principal":"*","Action":"ecr:PutImage"}]}"#,
    ),
    ok(
        "permission-only actions and case-insensitive names",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":{"Service":"replication.ecr.amazonaws.com"},"Action":["ecr:ReplicateImage","ECR:batchimportupstreamimage"]}}"#,
    ),
    ok(
        "identity policy with non-ECR actions",
        I,
        r#"{"Version":"2012-10-17","Id":"x","Statement":{"Effect":"Allow","Action":["s3:GetObject","ecr:Nonexistent"],"Resource":["arn:aws:s3:::bucket/*"]}}"#,
    ),
    bad("bad JSON", I, r#"{"Statement": ["#, "not valid JSON"),
    bad("not an object", I, r#"[1,2]"#, "must be a JSON object"),
    bad(
        "duplicate JSON key",
        I,
        r#"{"Statement":{"Effect":"Allow","Effect":"Deny","Action":"*","Resource":"*"}}"#,
        "duplicate key \"Effect\"",
    ),
    bad(
        "unknown top-level key",
        I,
        r#"{"Statment":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
        "unknown top-level key \"Statment\"",
    ),
    bad(
        "missing Statement",
        I,
        r#"{"Version":"2012-10-17"}"#,
        "missing Statement",
    ),
    bad(
        "empty Statement",
        I,
        r#"{"Statement":[]}"#,
        "Statement is empty",
    ),
    bad(
        "bad Version",
        I,
        r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
        "Version must be",
    ),
    bad(
        "missing Effect (names the statement)",
        I,
        r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"Second","Action":"*","Resource":"*"}]}"#,
        "statement 1 (Sid \"Second\"): missing Effect",
    ),
    bad(
        "lower-case Effect",
        I,
        r#"{"Statement":{"Effect":"allow","Action":"*","Resource":"*"}}"#,
        "statement 0: Effect must be \"Allow\" or \"Deny\"",
    ),
    bad(
        "both Action and NotAction",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","NotAction":"ecr:PutImage","Resource":"*"}}"#,
        "both Action and NotAction",
    ),
    bad(
        "neither Action nor NotAction",
        I,
        r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
        "missing Action or NotAction",
    ),
    bad(
        "unknown statement key",
        I,
        r#"{"Statement":{"Effect":"Allow","Actions":"*","Resource":"*"}}"#,
        "unknown key \"Actions\"",
    ),
    bad(
        "Principal in identity policy",
        I,
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
        "Principal is not allowed in an identity policy",
    ),
    bad(
        "identity policy without Resource",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
        "missing Resource or NotResource",
    ),
    bad(
        "duplicate Sid in identity policy",
        I,
        r#"{"Statement":[{"Sid":"a","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"a","Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        "duplicate Sid",
    ),
    bad(
        "missing Principal in resource policy",
        R,
        r#"{"Statement":{"Sid":"p","Effect":"Allow","Action":"ecr:BatchGetImage"}}"#,
        "statement 0 (Sid \"p\"): missing Principal or NotPrincipal",
    ),
    bad(
        "both Principal and NotPrincipal",
        R,
        r#"{"Statement":{"Effect":"Deny","Principal":"*","NotPrincipal":{"AWS":"123456789012"},"Action":"ecr:*"}}"#,
        "both Principal and NotPrincipal",
    ),
    bad(
        "unknown ECR action in repository policy",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"ecr:Nonexistent"}}"#,
        "\"ecr:Nonexistent\" is not a known ECR action",
    ),
    bad(
        "non-ECR action in repository policy",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}}"#,
        "not a known ECR action",
    ),
    bad(
        "malformed action",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"GetObject","Resource":"*"}}"#,
        "not of the form",
    ),
    bad(
        "bad principal string",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":"alice","Action":"ecr:*"}}"#,
        "Principal must be \"*\" or an object",
    ),
    bad(
        "wildcard inside a principal ARN",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/*"},"Action":"ecr:*"}}"#,
        "invalid AWS principal",
    ),
    bad(
        "unsupported principal type",
        R,
        r#"{"Statement":{"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com"},"Action":"ecr:*"}}"#,
        "unsupported principal type \"Federated\"",
    ),
    bad(
        "Resource not an ARN",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"repository/app"}}"#,
        "must be \"*\" or an ARN",
    ),
    bad(
        "empty Action list",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
        "Action is an empty list",
    ),
    bad(
        "unknown condition operator",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualz":{"aws:username":"a"}}}}"#,
        "unknown condition operator \"StringEqualz\"",
    ),
    bad(
        "Null takes no IfExists",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NullIfExists":{"aws:username":"true"}}}}"#,
        "unknown condition operator",
    ),
    bad(
        "bad CIDR",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}}"#,
        "is not an IP address or CIDR block",
    ),
    bad(
        "bad date",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2026-02-30T00:00:00Z"}}}}"#,
        "is not an ISO 8601 date",
    ),
    bad(
        "bad number",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"ecr:Count":"ten"}}}}"#,
        "is not a number",
    ),
    bad(
        "bad Bool value",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"yes"}}}}"#,
        "is not \"true\" or \"false\"",
    ),
    bad(
        "condition key without prefix",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"username":"a"}}}}"#,
        "must look like \"prefix:name\"",
    ),
    bad(
        "condition value of the wrong type",
        I,
        r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:username":{"a":1}}}}}"#,
        "must be a string, number or boolean",
    ),
];

#[test]
fn parse_cases() {
    let mut failures = Vec::new();
    for case in PARSE_CASES {
        match (Policy::parse(case.text, case.kind), case.error) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) if e.to_string().contains(want) => {}
            (got, want) => failures.push(format!("{}: expected {want:?}, got {got:?}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Model, catalogue and helpers.

#[test]
fn statement_errors_carry_index_and_sid() {
    let err = Policy::parse(
        r#"{"Statement":[{"Sid":"Pull","Effect":"Allow","Principal":"*","Action":"ecr:Bogus"}]}"#,
        PolicyKind::Resource,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PolicyError::Statement {
            index: 0,
            sid: Some("Pull".into()),
            message: "Action \"ecr:Bogus\" is not a known ECR action (ecr:<Operation>, wildcards allowed)"
                .into(),
        }
    );
}

#[test]
fn serializes_back_to_equivalent_json() {
    let text = r#"{"Version":"2012-10-17","Id":"doc","Statement":[{"Sid":"a","Effect":"Deny","NotPrincipal":{"AWS":["111111111111","arn:aws:iam::111111111111:user/alice"],"Service":"replication.ecr.amazonaws.com"},"NotAction":"ecr:Get*","NotResource":"arn:aws:ecr:*:*:repository/x","Condition":{"ForAnyValue:StringLikeIfExists":{"aws:TagKeys":["a*","b"]},"NumericLessThan":{"ecr:Count":5}}},{"Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage","ecr:ListImages"]}]}"#;
    let policy = Policy::parse(text, PolicyKind::Resource).unwrap();
    let json = serde_json::to_string(&policy).unwrap();
    let again = Policy::parse(&json, PolicyKind::Resource).unwrap();
    assert_eq!(policy, again, "{json}");
    assert!(
        json.contains(r#""ForAnyValue:StringLikeIfExists":{"aws:TagKeys":["a*","b"]}"#),
        "{json}"
    );
    assert!(json.contains(r#""Principal":"*""#), "{json}");
}

#[test]
fn ecr_action_catalogue() {
    assert_eq!(ECR_ACTIONS.len(), 58);
    let mut sorted = ECR_ACTIONS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 58);
    assert!(ECR_ACTIONS.iter().all(|a| a.starts_with("ecr:")));
    for (pattern, known) in [
        ("ecr:BatchGetImage", true),
        ("ECR:batchgetimage", true),
        ("ecr:GetAuthorizationToken", true),
        ("ecr:ReplicateImage", true),
        ("ecr:BatchImportUpstreamImage", true),
        ("ecr:*", true),
        ("*", true),
        ("ecr:Get*", true),
        ("ecr:?utImage", true),
        ("ecr:Nonexistent", false),
        ("ecr:Foo*", false),
        ("s3:GetObject", false),
        ("s3:*", false),
    ] {
        assert_eq!(is_known_ecr_action(pattern), known, "{pattern}");
    }
}

#[test]
fn dates_and_cidrs() {
    assert_eq!(format_iso8601(NOW), "2026-03-01T00:00:00Z");
    assert_eq!(format_iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_iso8601(951_782_400 + 86_399), "2000-02-29T23:59:59Z");
    assert_eq!(format_iso8601(-1), "1969-12-31T23:59:59Z");
    assert_eq!(parse_date_millis("2026-03-01T00:00:00Z"), Some(NOW * 1000));
    assert_eq!(parse_date_millis("2026-03-01"), Some(NOW * 1000));
    assert_eq!(parse_date_millis("1772323200"), Some(NOW * 1000));
    assert_eq!(
        parse_date_millis("2026-03-01T02:00:00+0200"),
        Some(NOW * 1000)
    );
    assert_eq!(
        parse_date_millis("2026-02-28T19:00-05:00"),
        Some(NOW * 1000)
    );
    assert_eq!(
        parse_date_millis("2026-03-01T00:00:00.250Z"),
        Some(NOW * 1000 + 250)
    );
    assert_eq!(
        parse_date_millis("2024-02-29T00:00:00Z"),
        Some(1_709_164_800_000)
    );
    for bad in [
        "2025-02-29",
        "2026-13-01",
        "2026-03-01T24:00:00Z",
        "soon",
        "",
        "2026-3-1",
    ] {
        assert_eq!(parse_date_millis(bad), None, "{bad}");
    }
    for (cidr, addr, inside) in [
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "11.0.0.0", false),
        ("10.1.2.3/32", "10.1.2.3", true),
        ("10.1.2.3/8", "10.200.0.1", true),
        ("::/0", "2001:db8::1", true),
        ("2001:db8::1/128", "2001:db8::1", true),
        ("2001:db8::1/128", "2001:db8::2", false),
        ("2001:db8:abcd::/48", "2001:db8:abcd:ffff::1", true),
    ] {
        let c = parse_cidr(cidr).unwrap();
        assert_eq!(c.contains(addr.parse().unwrap()), inside, "{cidr} {addr}");
    }
    for bad in [
        "10.0.0.0/",
        "10.0.0/8",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "host",
    ] {
        assert!(parse_cidr(bad).is_none(), "{bad}");
    }
}

#[test]
fn principal_helpers() {
    assert!(principal(Who::Root).is_root());
    assert!(!principal(Who::Alice).is_root());
    assert!(principal(Who::OtherRoot).is_root());
    assert_eq!(principal(Who::Alice).principal_type(), Some("User"));
    assert_eq!(
        principal(Who::RoleSession).principal_type(),
        Some("AssumedRole")
    );
    assert_eq!(
        principal(Who::RoleSession).role_arn().as_deref(),
        Some("arn:aws:iam::111111111111:role/deployer")
    );
    assert!(principal(Who::Service).is_service());
}
