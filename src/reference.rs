//! Repository names, tags and manifest references, validated by the grammar of
//! the OCI Distribution Specification.

use std::fmt;

use crate::digest::Digest;

/// Longest repository name accepted (what Amazon ECR and Distribution allow).
pub const MAX_NAME_LEN: usize = 256;

/// A validated repository name such as `team/app/api`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validate `s` against
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    pub fn parse(s: &str) -> Option<RepoName> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return None;
        }
        if s.split('/').all(valid_component) {
            Some(RepoName(s.to_string()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`
/// (also ECR's grammar of pull-through cache prefixes).
pub fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// Validate a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest (tags cannot contain one).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            s.parse::<Digest>()
                .map(Reference::Digest)
                .map_err(|e| ReferenceError::Digest(e.to_string()))
        } else if valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(ReferenceError::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid digest: {0}")]
    Digest(String),
    #[error("invalid tag: a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with . or -")]
    Tag,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/ubuntu",
            "team/app/api",
            "a.b_c__d--e/f",
            "0x/y-1",
        ] {
            assert!(RepoName::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a_", "a/B", "a b", "a:b",
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(257)).is_none());
    }

    #[test]
    fn tags_and_references() {
        assert!(valid_tag("v1.0.0-rc_1"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:00"),
            Err(ReferenceError::Digest(_))
        ));
        assert_eq!(Reference::parse("a/b"), Err(ReferenceError::Tag));
    }
}

/// The key under which the stores keep a registry: the account id for the
/// deployment's home region (as every data directory before multi-region
/// has it), `<account>@<region>` for another region the deployment serves.
/// A registry is regional in ECR: its repositories, policies and settings
/// are a region's; accounts and their keys are global.
pub fn registry_key(account: &str, region: &str, home_region: &str) -> String {
    if region == home_region {
        account.to_string()
    } else {
        format!("{account}@{region}")
    }
}

/// The account of a registry key (what ECR shows as `registryId`).
pub fn key_account(key: &str) -> &str {
    key.split_once('@').map_or(key, |(a, _)| a)
}

/// The ARN of repository `name` of account `registry` in `region`.
pub fn repository_arn(region: &str, registry: &str, name: &str) -> String {
    format!("arn:aws:ecr:{region}:{registry}:repository/{name}")
}

/// The region of a registry key.
pub fn key_region<'a>(key: &'a str, home_region: &'a str) -> &'a str {
    key.split_once('@').map_or(home_region, |(_, r)| r)
}

#[cfg(test)]
mod registry_key_tests {
    use super::*;

    #[test]
    fn the_home_region_keeps_bare_account_keys() {
        assert_eq!(
            registry_key("123456789012", "us-east-1", "us-east-1"),
            "123456789012"
        );
        let k = registry_key("123456789012", "eu-west-1", "us-east-1");
        assert_eq!(k, "123456789012@eu-west-1");
        assert_eq!(key_account(&k), "123456789012");
        assert_eq!(key_region(&k, "us-east-1"), "eu-west-1");
        assert_eq!(key_account("123456789012"), "123456789012");
        assert_eq!(key_region("123456789012", "us-east-1"), "us-east-1");
    }
}
