//! ECR's rules for pull-through cache rules, pure: which repository
//! prefixes are valid, how an upstream registry URL is read, which upstreams
//! ECR names (and which of them need credentials), what a `credentialArn`
//! must look like, and which upstream repository a cached name maps to.

/// Most rules one registry may have (ECR's quota, not adjustable).
pub const MAX_RULES: i64 = 50;

/// The prefix of the rule for every name no other rule matches.
pub const ROOT: &str = "ROOT";

/// ECR's pattern for both prefix members, as its error messages quote it.
pub const PREFIX_PATTERN: &str =
    "^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$";

pub const CREDENTIAL_ARN_PATTERN: &str = "^arn:aws(-\\w+)*:secretsmanager:[a-zA-Z0-9-:]+:secret:ecr\\-pullthroughcache\\/[a-zA-Z0-9\\/_+=.@-]+$";

/// What Secrets Manager secrets for ECR's pull-through cache are named under.
pub const SECRET_PREFIX: &str = "ecr-pullthroughcache/";

/// Why a rule's member is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleInputError {
    /// `Invalid parameter at '<member>' failed to satisfy constraint: '<detail>'`.
    #[error("Invalid parameter at '{member}' failed to satisfy constraint: '{detail}'")]
    Constraint {
        member: &'static str,
        detail: String,
    },
    /// ECR's UnsupportedUpstreamRegistryException.
    #[error("{0}")]
    UnsupportedUpstream(String),
}

fn constraint(member: &'static str, detail: impl Into<String>) -> RuleInputError {
    RuleInputError::Constraint {
        member,
        detail: detail.into(),
    }
}

/// A repository prefix (`ecrRepositoryPrefix` or `upstreamRepositoryPrefix`):
/// 2–30 characters of ECR's pattern, or `ROOT`. Returned without the
/// trailing `/` ECR allows (and implies).
pub fn prefix(member: &'static str, s: &str) -> Result<String, RuleInputError> {
    let n = s.chars().count();
    if n < 2 {
        return Err(constraint(
            member,
            "Member must have length greater than or equal to 2",
        ));
    }
    if n > 30 {
        return Err(constraint(
            member,
            "Member must have length less than or equal to 30",
        ));
    }
    if s == ROOT {
        return Ok(ROOT.to_string());
    }
    let bare = s.strip_suffix('/').unwrap_or(s);
    if bare.is_empty() || !bare.split('/').all(crate::reference::valid_component) {
        return Err(constraint(
            member,
            format!("Member must satisfy regular expression pattern: {PREFIX_PATTERN}"),
        ));
    }
    Ok(bare.to_string())
}

/// Where an upstream registry is: `https://host[:port]` unless the URL says `http://`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub secure: bool,
    /// Lower-case host, with `:port` if one was given.
    pub host: String,
}

impl UpstreamUrl {
    /// `scheme://host[:port]`, what `/v2/…` paths are appended to.
    pub fn base(&self) -> String {
        format!(
            "{}://{}",
            if self.secure { "https" } else { "http" },
            self.host
        )
    }

    /// The host without its port.
    pub fn hostname(&self) -> &str {
        if self.host.starts_with('[') {
            return self.host.split(']').next().map_or("", |h| &h[1..]);
        }
        self.host.split(':').next().unwrap_or(&self.host)
    }
}

/// Read `upstreamRegistryUrl`: a host name as ECR takes it (`quay.io`,
/// HTTPS assumed), or a full `http://` / `https://` URL of any OCI registry,
/// with an optional port and nothing after the host but an optional `/`.
pub fn upstream_url(s: &str) -> Result<UpstreamUrl, RuleInputError> {
    const M: &str = "upstreamRegistryUrl";
    if s.is_empty() || s.len() > 512 {
        return Err(constraint(M, "Member must have length between 1 and 512"));
    }
    let (secure, rest) = match s.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "https" => (true, rest),
            "http" => (false, rest),
            other => {
                return Err(RuleInputError::UnsupportedUpstream(format!(
                    "The upstream registry URL scheme '{other}' is not supported; use a host name, or an https:// or http:// URL"
                )));
            }
        },
        None => (true, s),
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let bad = |why: &str| {
        constraint(
            M,
            format!("'{s}' is not a registry host name or URL: {why}"),
        )
    };
    if host.contains(['/', '?', '#', '@']) {
        return Err(bad("only a host and an optional port may be given"));
    }
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
        };
        (format!("[{addr}]"), port)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (host.to_string(), None),
        }
    };
    if !name.starts_with('[') {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(bad("not a valid host name"));
        }
    }
    let mut host = name.to_ascii_lowercase();
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => host = format!("{host}:{n}"),
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        }
    }
    Ok(UpstreamUrl { secure, host })
}

/// ECR's `upstreamRegistry` values.
pub const UPSTREAM_REGISTRIES: &[&str] = &[
    "ecr",
    "ecr-public",
    "quay",
    "k8s",
    "docker-hub",
    "github-container-registry",
    "azure-container-registry",
    "gitlab-container-registry",
    "chainguard",
];

/// The upstream ECR names by this host, if it is one ECR knows.
pub fn known_upstream(url: &UpstreamUrl) -> Option<&'static str> {
    let h = url.hostname();
    Some(match h {
        "registry-1.docker.io" | "docker.io" => "docker-hub",
        "public.ecr.aws" => "ecr-public",
        "quay.io" => "quay",
        "registry.k8s.io" => "k8s",
        "ghcr.io" => "github-container-registry",
        "registry.gitlab.com" => "gitlab-container-registry",
        "cgr.dev" => "chainguard",
        _ if h.ends_with(".azurecr.io") => "azure-container-registry",
        _ if is_ecr_host(h) => "ecr",
        _ => return None,
    })
}

fn is_ecr_host(h: &str) -> bool {
    let mut parts = h.split('.');
    let account = parts.next().unwrap_or("");
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && parts.next() == Some("dkr")
        && parts.next() == Some("ecr")
        && (h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn"))
}

/// Upstreams ECR only caches from with credentials (a Secrets Manager secret).
pub fn needs_credentials(upstream: &str) -> bool {
    matches!(
        upstream,
        "docker-hub"
            | "github-container-registry"
            | "gitlab-container-registry"
            | "azure-container-registry"
            | "chainguard"
    )
}

/// Which ECR upstream the rule is for: the given `upstreamRegistry` must be
/// the one the URL's host is (when ECR knows the host); an Amazon ECR
/// upstream is refused (ECR reaches it through `customRoleArn`, an IAM role
/// Berth cannot assume).
pub fn upstream_registry(
    url: &UpstreamUrl,
    given: Option<&str>,
) -> Result<Option<&'static str>, RuleInputError> {
    let known = known_upstream(url);
    if let Some(g) = given {
        if !UPSTREAM_REGISTRIES.contains(&g) {
            return Err(constraint(
                "upstreamRegistry",
                format!(
                    "Member must satisfy enum value set: [{}]",
                    UPSTREAM_REGISTRIES.join(", ")
                ),
            ));
        }
        if known != Some(g) {
            return Err(RuleInputError::UnsupportedUpstream(format!(
                "The upstream registry URL '{}' is not the upstream registry '{g}'{}",
                url.host,
                match known {
                    Some(k) => format!(" (it is '{k}')"),
                    None => "; leave upstreamRegistry out for another OCI registry".to_string(),
                }
            )));
        }
    }
    if known == Some("ecr") {
        return Err(RuleInputError::UnsupportedUpstream(
            "Berth cannot cache from an Amazon ECR upstream: ECR reaches it with customRoleArn, an IAM role Berth cannot assume. Give another Berth or any OCI registry by URL instead".into(),
        ));
    }
    Ok(known)
}

/// A `credentialArn` split into (region, account, secret name with its
/// `ecr-pullthroughcache/` prefix).
pub fn credential_arn(s: &str) -> Result<(String, String, String), RuleInputError> {
    const M: &str = "credentialArn";
    let n = s.chars().count();
    if !(50..=612).contains(&n) {
        return Err(constraint(M, "Member must have length between 50 and 612"));
    }
    let pattern = || {
        constraint(
            M,
            format!("Member must satisfy regular expression pattern: {CREDENTIAL_ARN_PATTERN}"),
        )
    };
    // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME
    let mut it = s.splitn(7, ':');
    let (arn, partition, service, region, account, kind, name) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    );
    let (Some("arn"), Some(partition), Some("secretsmanager"), Some(region), Some(account)) =
        (arn, partition, service, region, account)
    else {
        return Err(pattern());
    };
    let partition_ok = partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|rest| {
            rest.split('-')
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        });
    let (Some("secret"), Some(name)) = (kind, name) else {
        return Err(pattern());
    };
    let name_ok = name
        .strip_prefix(SECRET_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(is_secret_name_byte));
    if !partition_ok || region.is_empty() || account.is_empty() || !name_ok {
        return Err(pattern());
    }
    Ok((region.to_string(), account.to_string(), name.to_string()))
}

/// The characters Secrets Manager allows in the name after `ecr-pullthroughcache/`.
pub fn is_secret_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'+' | b'=' | b'.' | b'@' | b'-')
}

/// The rule of `rules` that caches `name`, and the upstream repository it
/// maps to: the longest prefix `p` with `name` under `p/`, else the `ROOT`
/// rule; the rest of the name goes under the rule's upstream prefix.
pub fn route<'a, R>(
    rules: &'a [R],
    prefix_of: impl Fn(&R) -> (&str, &str),
    name: &str,
) -> Option<(&'a R, String)> {
    let mut best: Option<(&R, usize, &str)> = None;
    for r in rules {
        let (p, _) = prefix_of(r);
        if p == ROOT {
            continue;
        }
        if let Some(rest) = name.strip_prefix(p).and_then(|s| s.strip_prefix('/'))
            && !rest.is_empty()
            && best.is_none_or(|(_, len, _)| p.len() > len)
        {
            best = Some((r, p.len(), rest));
        }
    }
    let (rule, rest) = match best {
        Some((r, _, rest)) => (r, rest),
        None => (rules.iter().find(|r| prefix_of(r).0 == ROOT)?, name),
    };
    let up = prefix_of(rule).1;
    let upstream = if up == ROOT {
        rest.to_string()
    } else {
        format!("{up}/{rest}")
    };
    Some((rule, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_ecrs_pattern() {
        assert_eq!(prefix("p", "docker-hub").unwrap(), "docker-hub");
        assert_eq!(prefix("p", "team/hub/").unwrap(), "team/hub");
        assert_eq!(prefix("p", "ROOT").unwrap(), "ROOT");
        assert_eq!(prefix("p", "a__b").unwrap(), "a__b");
        assert_eq!(prefix("p", "a---b.c_d").unwrap(), "a---b.c_d");
        for bad in [
            "Hub", "a", "-ab", "ab-", "a___b", "a._b", "a//b", "/ab", "ab//",
        ] {
            assert!(prefix("p", bad).is_err(), "{bad}");
        }
        let long = "a".repeat(31);
        assert_eq!(
            prefix("ecrRepositoryPrefix", &long)
                .unwrap_err()
                .to_string(),
            "Invalid parameter at 'ecrRepositoryPrefix' failed to satisfy constraint: 'Member must have length less than or equal to 30'"
        );
        assert!(
            prefix("ecrRepositoryPrefix", "a")
                .unwrap_err()
                .to_string()
                .contains("greater than or equal to 2")
        );
    }

    #[test]
    fn upstream_urls() {
        let u = upstream_url("quay.io").unwrap();
        assert_eq!(u.base(), "https://quay.io");
        let u = upstream_url("http://127.0.0.1:5001/").unwrap();
        assert_eq!((u.secure, u.host.as_str()), (false, "127.0.0.1:5001"));
        assert_eq!(u.hostname(), "127.0.0.1");
        let u = upstream_url("HTTPS://Registry-1.Docker.IO").unwrap();
        assert_eq!(u.base(), "https://registry-1.docker.io");
        let u = upstream_url("http://[::1]:5000").unwrap();
        assert_eq!((u.host.as_str(), u.hostname()), ("[::1]:5000", "::1"));
        assert!(matches!(
            upstream_url("ftp://x.io"),
            Err(RuleInputError::UnsupportedUpstream(_))
        ));
        for bad in [
            "",
            "https://",
            "quay.io/v2",
            "https://u:p@quay.io",
            "quay.io:0",
            "quay.io:99999",
            "-a.io",
            "a..io",
            "quay.io?x",
            "http://[zz]:1",
        ] {
            assert!(upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_registries_and_credentials() {
        let hub = upstream_url("registry-1.docker.io").unwrap();
        assert_eq!(upstream_registry(&hub, None).unwrap(), Some("docker-hub"));
        assert_eq!(
            upstream_registry(&hub, Some("docker-hub")).unwrap(),
            Some("docker-hub")
        );
        assert!(matches!(
            upstream_registry(&hub, Some("quay")),
            Err(RuleInputError::UnsupportedUpstream(_))
        ));
        assert!(matches!(
            upstream_registry(&hub, Some("nope")),
            Err(RuleInputError::Constraint { .. })
        ));
        let local = upstream_url("http://127.0.0.1:5000").unwrap();
        assert_eq!(upstream_registry(&local, None).unwrap(), None);
        assert!(upstream_registry(&local, Some("quay")).is_err());
        let ecr = upstream_url("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert!(matches!(
            upstream_registry(&ecr, None),
            Err(RuleInputError::UnsupportedUpstream(_))
        ));
        let acr = upstream_url("myreg.azurecr.io").unwrap();
        assert_eq!(known_upstream(&acr), Some("azure-container-registry"));
        assert!(needs_credentials("docker-hub"));
        assert!(!needs_credentials("quay"));
    }

    #[test]
    fn credential_arns() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub";
        assert_eq!(
            credential_arn(arn).unwrap(),
            (
                "us-east-1".into(),
                "123456789012".into(),
                "ecr-pullthroughcache/hub".into()
            )
        );
        assert!(
            credential_arn(
                "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:ecr-pullthroughcache/a/b-c"
            )
            .is_ok()
        );
        for bad in [
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/hub-xxxxxxxxxxxx",
            "arn:aws:kms:us-east-1:123456789012:secret:ecr-pullthroughcache/hub",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/a b",
            "short",
        ] {
            assert!(credential_arn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_route_to_the_longest_prefix_then_root() {
        let rules = [
            ("hub", "ROOT"),
            ("hub/library", "library"),
            ("ROOT", "mirror"),
            ("quay", "ROOT"),
        ];
        fn f<'a>(r: &'a (&'static str, &'static str)) -> (&'a str, &'a str) {
            (r.0, r.1)
        }
        let r = |name| route(&rules, f, name).map(|(r, up)| (r.0, up));
        assert_eq!(r("hub/nginx"), Some(("hub", "nginx".into())));
        assert_eq!(
            r("hub/library/alpine"),
            Some(("hub/library", "library/alpine".into()))
        );
        assert_eq!(r("quay/a/b"), Some(("quay", "a/b".into())));
        assert_eq!(r("other/x"), Some(("ROOT", "mirror/other/x".into())));
        // A prefix names a directory, not a string prefix.
        assert_eq!(r("hubx/y"), Some(("ROOT", "mirror/hubx/y".into())));
        assert_eq!(r("hub"), Some(("ROOT", "mirror/hub".into())));
        let no_root = [("hub", "ROOT")];
        assert!(route(&no_root, f, "quay/x").is_none());
    }
}
