//! The parameter store Berth answers from: the SSM parameters a deployment
//! tool reads before it deploys, as a bootstrapped AWS environment would hold
//! them. Today these are the CDK bootstrap version parameters
//! `/cdk-bootstrap/<qualifier>/version`, for any qualifier the bootstrap
//! template allows, in every account: Berth needs no bootstrap stack, and a
//! CDK app's `BootstrapVersion` template parameter (type
//! `AWS::SSM::Parameter::Value<String>`) and its `CheckBootstrapVersion`
//! rule see a current bootstrap. This module owns which names exist and
//! their values; the SSM face (`ssm_api`) puts them on the wire and the
//! CloudFormation engine resolves SSM-typed template parameters through
//! [`lookup`]. Pure values, no I/O.

/// The bootstrap version Berth reports: the version of the current CDK
/// bootstrap template (`CdkBootstrapVersion` in the CDK CLI's
/// `bootstrap-template.yaml`). aws-cdk-lib's `DefaultStackSynthesizer`
/// requires at least 6 to deploy, 8 for its lookup role and 22 for session
/// tags, and its `CheckBootstrapVersion` rule fails on the versions below
/// the one it requires; the CDK CLI accepts any version at or above what a
/// stack requires.
pub const CDK_BOOTSTRAP_VERSION: u32 = 32;

/// One parameter as `GetParameter` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    /// The full name, e.g. `/cdk-bootstrap/hnb659fds/version`.
    pub name: String,
    pub value: String,
    /// The parameter's version (SSM counts from 1 per change of value).
    pub version: i64,
    /// SSM's parameter type: `String`, `StringList` or `SecureString`.
    pub kind: &'static str,
    pub arn: String,
}

/// The parameter `name` of `account` in `region`, if Berth has it.
pub fn lookup(account: &str, region: &str, name: &str) -> Option<Parameter> {
    let qualifier = name
        .strip_prefix("/cdk-bootstrap/")?
        .strip_suffix("/version")?;
    if !valid_qualifier(qualifier) {
        return None;
    }
    Some(Parameter {
        name: name.to_string(),
        value: CDK_BOOTSTRAP_VERSION.to_string(),
        version: 1,
        kind: "String",
        arn: arn(account, region, name),
    })
}

/// The ARN of parameter `name` (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`;
/// a hierarchical name's leading `/` is not doubled).
pub fn arn(account: &str, region: &str, name: &str) -> String {
    format!(
        "arn:aws:ssm:{region}:{account}:parameter/{}",
        name.strip_prefix('/').unwrap_or(name)
    )
}

/// A parameter ARN's (region, account, name), the name with the leading `/`
/// a hierarchical name has; `None` if `s` is not a parameter ARN.
pub fn parse_arn(s: &str) -> Option<(&str, &str, String)> {
    let rest = s.strip_prefix("arn:aws:ssm:")?;
    let (region, rest) = rest.split_once(':')?;
    let (account, rest) = rest.split_once(':')?;
    let path = rest.strip_prefix("parameter/")?;
    if region.is_empty() || account.is_empty() || path.is_empty() {
        return None;
    }
    let name = if path.contains('/') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Some((region, account, name))
}

/// The qualifiers a CDK bootstrap stack can have (its template's
/// `AllowedPattern`, `[A-Za-z0-9_-]{1,10}`).
fn valid_qualifier(q: &str) -> bool {
    (1..=10).contains(&q.len())
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_version_of_any_allowed_qualifier() {
        let p = lookup(
            "123456789012",
            "us-east-1",
            "/cdk-bootstrap/hnb659fds/version",
        )
        .unwrap();
        assert_eq!(p.value, "32");
        assert_eq!(p.version, 1);
        assert_eq!(p.kind, "String");
        assert_eq!(
            p.arn,
            "arn:aws:ssm:us-east-1:123456789012:parameter/cdk-bootstrap/hnb659fds/version"
        );
        for q in ["a", "custom_q-1", "ABCDEFGHIJ"] {
            let name = format!("/cdk-bootstrap/{q}/version");
            assert_eq!(lookup("1", "eu-west-1", &name).unwrap().name, name);
        }
    }

    #[test]
    fn other_names_do_not_exist() {
        for name in [
            "",
            "/cdk-bootstrap//version",
            "/cdk-bootstrap/ABCDEFGHIJK/version",
            "/cdk-bootstrap/has.dot/version",
            "/cdk-bootstrap/a/b/version",
            "/cdk-bootstrap/hnb659fds/versions",
            "cdk-bootstrap/hnb659fds/version",
            "/cdk-bootstrap/hnb659fds/version/",
            "/other/param",
        ] {
            assert_eq!(lookup("1", "us-east-1", name), None, "{name}");
        }
    }

    #[test]
    fn arns_both_ways() {
        assert_eq!(arn("1", "r", "plain"), "arn:aws:ssm:r:1:parameter/plain");
        let a = arn("123456789012", "us-east-1", "/cdk-bootstrap/x/version");
        assert_eq!(
            parse_arn(&a),
            Some((
                "us-east-1",
                "123456789012",
                "/cdk-bootstrap/x/version".to_string()
            ))
        );
        assert_eq!(
            parse_arn("arn:aws:ssm:r:1:parameter/plain"),
            Some(("r", "1", "plain".to_string()))
        );
        for bad in [
            "arn:aws:ssm:r:1:document/x",
            "arn:aws:ssm::1:parameter/x",
            "arn:aws:ssm:r:1:parameter/",
            "arn:aws:kms:r:1:parameter/x",
            "/cdk-bootstrap/x/version",
        ] {
            assert_eq!(parse_arn(bad), None, "{bad}");
        }
    }
}
