//! AWS's Query protocol, as CloudFormation and STS speak it: a form-encoded
//! `POST /` body (`Action=…&Version=…&Name.member.1=…`), an XML answer
//! `<{Action}Response><{Action}Result>…</{Action}Result><ResponseMetadata>…`,
//! and errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error>`.
//! This module owns only the wire shapes; the faces that use it
//! (`cloudformation_api`, `sts_api`) own their operations.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A Query request's parameters, by their flattened names.
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

/// An error in the Query protocol's terms.
#[derive(Debug, Clone)]
pub struct QueryError {
    pub code: String,
    pub message: String,
    pub status: u16,
    /// `Sender` (the caller's fault) or `Receiver` (the server's).
    pub sender: bool,
}

impl QueryError {
    pub fn new(code: impl Into<String>, status: u16, message: impl Into<String>) -> QueryError {
        QueryError {
            code: code.into(),
            message: message.into(),
            status,
            sender: status < 500,
        }
    }

    /// `ValidationError`, the error most bad input gets.
    pub fn validation(message: impl Into<String>) -> QueryError {
        QueryError::new("ValidationError", 400, message)
    }

    /// The XML error response, with the request's id.
    pub fn to_response(&self, request_id: &str) -> Response {
        let mut body = String::from("<ErrorResponse><Error><Type>");
        body.push_str(if self.sender { "Sender" } else { "Receiver" });
        body.push_str("</Type>");
        elem(&mut body, "Code", &self.code);
        elem(&mut body, "Message", &self.message);
        body.push_str("</Error>");
        elem(&mut body, "RequestId", request_id);
        body.push_str("</ErrorResponse>");
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        xml_response(status, body, request_id)
    }
}

impl Params {
    /// Parse a form-encoded body. Repeated names keep their last value.
    pub fn parse(body: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Params
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Params(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `name`, if given (an empty value counts as given).
    /// The parameters as a JSON object (an audit event's
    /// requestParameters), without `Action` and `Version`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "Action" | "Version"))
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether `name` was given a value: itself not empty, or a member or
    /// field under it (`name.member.1`, `name.Field`).
    pub fn given(&self, name: &str) -> bool {
        if self.opt(name).is_some() {
            return true;
        }
        let prefix = format!("{name}.");
        self.0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, v)| !v.is_empty())
    }

    /// The value of `name`, if given and not empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// The value of `name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, QueryError> {
        self.opt(name).ok_or_else(|| {
            QueryError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ))
        })
    }

    /// A boolean parameter (`true` / `false`), `None` when absent.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, QueryError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(QueryError::validation(format!(
                "Value '{v}' at '{}' is not a boolean",
                lower_first(name)
            ))),
        }
    }

    /// The members of the list `name` (`name.member.1`, `name.member.2`, …),
    /// in index order. An empty list is sent as `name=` and yields nothing.
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.member.");
        let mut items: Vec<(u64, String)> = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, v)| {
                let idx = k[prefix.len()..].parse::<u64>().ok()?;
                Some((idx, v.clone()))
            })
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The members of a list of structures (`name.member.N.Field`), each as
    /// its own [`Params`] keyed by field, in index order.
    pub fn structs(&self, name: &str) -> Vec<Params> {
        let prefix = format!("{name}.member.");
        let mut items: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            let rest = &k[prefix.len()..];
            let Some((idx, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(idx) = idx.parse::<u64>() else {
                continue;
            };
            items
                .entry(idx)
                .or_default()
                .insert(field.to_string(), v.clone());
        }
        items.into_values().map(Params).collect()
    }
}

/// `Name` as the model's members are spelt in validation messages (`name`).
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `text` escaped for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

/// Append `<name>text</name>`.
pub fn elem(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

/// Append `<name>text</name>` when there is a text.
pub fn opt_elem(out: &mut String, name: &str, text: Option<&str>) {
    if let Some(t) = text {
        elem(out, name, t);
    }
}

/// Append `<name><member>…</member>…</name>` with each item's XML.
pub fn members<T>(
    out: &mut String,
    name: &str,
    items: &[T],
    mut each: impl FnMut(&mut String, &T),
) {
    let _ = write!(out, "<{name}>");
    for item in items {
        out.push_str("<member>");
        each(out, item);
        out.push_str("</member>");
    }
    let _ = write!(out, "</{name}>");
}

/// The success response of `action`: `result` (XML of the result's members)
/// inside `<{action}Result>`, with the request id.
pub fn success(action: &str, xmlns: &str, result: &str, request_id: &str) -> Response {
    let mut body = String::with_capacity(result.len() + 256);
    let _ = write!(body, "<{action}Response xmlns=\"{xmlns}\">");
    if result.is_empty() {
        let _ = write!(body, "<{action}Result/>");
    } else {
        let _ = write!(body, "<{action}Result>{result}</{action}Result>");
    }
    body.push_str("<ResponseMetadata>");
    elem(&mut body, "RequestId", request_id);
    let _ = write!(body, "</ResponseMetadata></{action}Response>");
    xml_response(StatusCode::OK, body, request_id)
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// A SigV4 failure in the Query protocol's words: the codes STS and
/// CloudFormation answer (`InvalidClientTokenId` for an unknown key,
/// `SignatureDoesNotMatch` for a wrong, expired or mis-scoped signature, …)
/// where the JSON services say `UnrecognizedClientException`,
/// `InvalidSignatureException`, ….
pub fn sigv4_error(e: &crate::sigv4::SigV4Error) -> QueryError {
    use crate::sigv4::SigV4Error as E;
    let (code, status) = match e {
        E::MissingAuthenticationToken => ("MissingAuthenticationToken", 403),
        E::IncompleteSignature(_) => ("IncompleteSignature", 400),
        E::UnrecognizedClient => ("InvalidClientTokenId", 403),
        E::SignatureDoesNotMatch
        | E::SignatureExpired { .. }
        | E::SignatureNotYetCurrent { .. }
        | E::InvalidScope(_)
        | E::HostNotSigned
        | E::HeaderNotSigned(_) => ("SignatureDoesNotMatch", 403),
    };
    QueryError::new(code, status, e.to_string())
}

/// Epoch milliseconds as an ISO 8601 UTC timestamp (`2026-12-01T22:43:58.123Z`).
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = crate::sigv4::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_structures_come_back_in_index_order() {
        let p = Params::parse(
            b"Action=X&Capabilities.member.10=C&Capabilities.member.2=B&Capabilities.member.1=A\
              &Tags.member.1.Key=k1&Tags.member.1.Value=v1&Tags.member.2.Key=k2&Tags.member.2.Value=&Empty=",
        );
        assert_eq!(p.list("Capabilities"), ["A", "B", "C"]);
        let tags = p.structs("Tags");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[1].get("Key"), Some("k2"));
        assert_eq!(tags[1].get("Value"), Some(""));
        assert!(p.list("Empty").is_empty());
        assert!(p.given("Capabilities") && p.given("Tags") && !p.given("Empty"));
        assert!(!p.given("Absent"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.opt("Empty"), None);
        assert!(p.required("StackName").is_err());
    }

    #[test]
    fn xml_is_escaped_and_timestamps_are_iso() {
        let mut s = String::new();
        elem(&mut s, "M", "a<b & \"c\"");
        assert_eq!(s, "<M>a&lt;b &amp; &quot;c&quot;</M>");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_796_165_038_123), "2026-12-01T22:43:58.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
