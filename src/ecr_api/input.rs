//! Reading and validating ECR request members. botocore checks only required
//! members, types and minimums, so the server enforces every length, pattern
//! and enum of the service model, answering `InvalidParameterException`.

use serde_json::Value;

use super::EcrError;

pub struct Input {
    v: Value,
}

impl Input {
    pub fn new(v: Value) -> Input {
        Input { v }
    }

    /// The whole input, as sent.
    pub fn value(&self) -> &Value {
        &self.v
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, EcrError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(EcrError::serialization(format!("{key} must be a string"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, EcrError> {
        self.opt_str(key)?
            .ok_or_else(|| EcrError::invalid(format!("Missing required parameter: {key}")))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, EcrError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(EcrError::serialization(format!("{key} must be a boolean"))),
        }
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, EcrError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| EcrError::serialization(format!("{key} must be an integer"))),
        }
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&Vec<Value>>, EcrError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(EcrError::serialization(format!("{key} must be a list"))),
        }
    }

    pub fn opt_str_list(&self, key: &str) -> Result<Option<Vec<String>>, EcrError> {
        let Some(a) = self.opt_array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    EcrError::serialization(format!("{key} must be a list of strings"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn opt_object(
        &self,
        key: &str,
    ) -> Result<Option<&serde_json::Map<String, Value>>, EcrError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(EcrError::serialization(format!(
                "{key} must be a structure"
            ))),
        }
    }

    /// `maxResults` within `1..=max` (default `default`).
    pub fn max_results(&self, max: i64, default: i64) -> Result<i64, EcrError> {
        match self.opt_i64("maxResults")? {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(EcrError::constraint(
                "maxResults",
                format!("Member must have value between 1 and {max}"),
            )),
        }
    }
}

pub fn check_len(member: &str, s: &str, min: usize, max: usize) -> Result<(), EcrError> {
    let n = s.chars().count();
    if n < min {
        return Err(EcrError::constraint(
            member,
            format!("must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(EcrError::constraint(
            member,
            format!("must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

pub fn check_count(member: &str, n: usize, min: usize, max: usize) -> Result<(), EcrError> {
    if n < min || n > max {
        return Err(EcrError::constraint(
            member,
            format!("Member must have length between {min} and {max}"),
        ));
    }
    Ok(())
}

pub fn check_pattern(
    member: &str,
    s: &str,
    ok: fn(&str) -> bool,
    regex: &str,
) -> Result<(), EcrError> {
    if ok(s) {
        Ok(())
    } else {
        Err(EcrError::constraint(
            member,
            format!("must satisfy regular expression '{regex}'"),
        ))
    }
}

pub fn check_enum(member: &str, s: &str, values: &[&str]) -> Result<(), EcrError> {
    if values.contains(&s) {
        Ok(())
    } else {
        Err(EcrError::constraint(
            member,
            format!(
                "Member must satisfy enum value set: [{}]",
                values.join(", ")
            ),
        ))
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

pub const REPOSITORY_NAME_PATTERN: &str =
    "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";

/// `repositoryName`: 2–256 characters of the OCI name grammar.
pub fn repository_name(input: &Input) -> Result<crate::reference::RepoName, EcrError> {
    let name = input.str("repositoryName")?;
    check_len("repositoryName", name, 2, 256)?;
    crate::reference::RepoName::parse(name).ok_or_else(|| {
        EcrError::constraint(
            "repositoryName",
            format!("must satisfy regular expression '{REPOSITORY_NAME_PATTERN}'"),
        )
    })
}

/// Resource tags: `[{"Key","Value"}]`, keys 1–128, values 0–256, at most 200 in a request.
pub fn resource_tags(input: &Input, member: &str) -> Result<Vec<(String, String)>, EcrError> {
    let Some(list) = input.opt_array(member)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in list {
        let key = t.get("Key").and_then(Value::as_str);
        let value = t.get("Value").and_then(Value::as_str);
        let (Some(k), Some(v)) = (key, value) else {
            return Err(EcrError::new(
                "InvalidTagParameterException",
                400,
                "Each tag needs a Key and a Value",
            ));
        };
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(EcrError::new(
                "InvalidTagParameterException",
                400,
                "Tag keys must be 1 to 128 characters and values 0 to 256",
            ));
        }
        if k.starts_with("aws:") {
            return Err(EcrError::new(
                "InvalidTagParameterException",
                400,
                "The aws: prefix is reserved for AWS use",
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// ECR's tag filter grammar for mutability exclusions: `^[0-9a-zA-Z._*-]{1,128}$`.
pub fn is_tag_filter(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'*' | b'-'))
}
