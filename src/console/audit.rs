//! The audit log page (`/console/audit`): the signed-in caller's account's
//! history in the home region, newest first, as CloudTrail's LookupEvents
//! gives it — one attribute filter (event name, user name, resource name or
//! type, access key, event source, read-only, event id), a time range, and
//! pages of 50 behind a sealed cursor. It reads the audit trail's own
//! lookup (`AuditTrail::lookup`), authorized explicitly as
//! `cloudtrail:LookupEvents` (identity policies, as the CloudTrail face
//! does), and records the lookup as a LookupEvents event of the caller.
//! Also here: the console's sign-in events (CloudTrail's `ConsoleLogin`).

use serde_json::{Value, json};

use super::html::{self, attr, esc, href};
use super::{Ctx, PageError, PageResult};
use crate::audit_trail::{AuditAttribute, AuditQuery};

/// Events per page (LookupEvents' most).
const PER_PAGE: i64 = 50;
/// The longest filter value the page takes.
const MAX_VALUE: usize = 256;

/// The lookup attributes, as LookupEvents names them.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("EventName", "Event name"),
    ("Username", "User name"),
    ("ResourceName", "Resource name"),
    ("ResourceType", "Resource type"),
    ("AccessKeyId", "Access key ID"),
    ("EventSource", "Event source"),
    ("ReadOnly", "Read-only (true/false)"),
    ("EventId", "Event ID"),
];

fn attribute(key: &str, value: &str) -> Result<Option<AuditAttribute>, PageError> {
    if key.is_empty() || value.is_empty() {
        return Ok(None);
    }
    let v = value.to_string();
    Ok(Some(match key {
        "EventName" => AuditAttribute::EventName(v),
        "Username" => AuditAttribute::Username(v),
        "ResourceName" => AuditAttribute::ResourceName(v),
        "ResourceType" => AuditAttribute::ResourceType(v),
        "AccessKeyId" => AuditAttribute::AccessKeyId(v),
        "EventSource" => AuditAttribute::EventSource(v),
        "EventId" => AuditAttribute::EventId(v),
        "ReadOnly" => match value {
            "true" => AuditAttribute::ReadOnly(true),
            "false" => AuditAttribute::ReadOnly(false),
            _ => return Err(PageError::Bad("Read-only is true or false".into())),
        },
        other => return Err(PageError::Bad(format!("Unknown filter {other:?}"))),
    }))
}

/// A `YYYY-MM-DD` date as epoch ms: its first millisecond, or (`end`) its last.
fn day_bound(s: &str, end: bool) -> Result<Option<i64>, PageError> {
    if s.is_empty() {
        return Ok(None);
    }
    let t = humantime::parse_rfc3339_weak(&format!("{s} 00:00:00"))
        .ok()
        .filter(|_| s.len() == 10)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .ok_or_else(|| PageError::Bad(format!("{s:?} is not a date (YYYY-MM-DD)")))?;
    let ms = t.as_millis() as i64;
    Ok(Some(if end { ms + 86_400_000 - 1 } else { ms }))
}

/// `GET /console/audit`.
pub async fn show(ctx: &Ctx) -> PageResult {
    let caller = &ctx.session.caller;
    let account = caller.principal.account.clone();
    let action = "cloudtrail:LookupEvents";
    if !ctx
        .state
        .access
        .authorize_identity(caller, action, "*", Some(&account), ctx.ip)
    {
        let message = format!(
            "User: {} is not authorized to perform: {action} because no identity-based policy allows the {action} action",
            ctx.arn()
        );
        // A refused lookup is recorded too, as CloudTrail records it.
        let mut e = ctx.event(crate::audit::CLOUDTRAIL, "LookupEvents", &account);
        e.read_only = true;
        e.error_code = Some("AccessDenied".into());
        e.error_message = Some(message.clone());
        ctx.state.audit.append(e, false).await;
        return Err(PageError::Denied(message));
    }
    let key = ctx.optional("attr", 16)?;
    let value = ctx.optional("value", MAX_VALUE)?.trim();
    let (from, to) = (ctx.optional("from", 10)?, ctx.optional("to", 10)?);
    let filter = attribute(key, value)?;
    let (start, end) = (day_bound(from, false)?, day_bound(to, true)?);
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(PageError::Bad(
            "The start date is after the end date".into(),
        ));
    }
    let scope = format!(
        "audit\n{}\n{filter:?}\n{start:?}\n{end:?}",
        ctx.state.region
    );
    let before = match ctx.optional("after", 2048)? {
        "" => None,
        t => {
            let c = ctx.open(&scope, t)?;
            let (time, seq) = c
                .split_once(' ')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| PageError::Bad("The page link is invalid".into()))?;
            Some((time, seq))
        }
    };
    let rows = ctx
        .state
        .audit
        .lookup(&AuditQuery {
            account: account.clone(),
            region: ctx.state.region.clone(),
            attribute: filter.clone(),
            start,
            end,
            before,
            limit: PER_PAGE + 1,
        })
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    // The lookup is an event of its own, as CloudTrail records LookupEvents.
    let mut params = json!({});
    if filter.is_some() {
        params["lookupAttributes"] = json!([{ "attributeKey": key, "attributeValue": value }]);
    }
    if let Some(s) = start {
        params["startTime"] = json!(crate::audit::event_time(s));
    }
    if let Some(e) = end {
        params["endTime"] = json!(crate::audit::event_time(e));
    }
    let mut e = ctx.event(crate::audit::CLOUDTRAIL, "LookupEvents", &account);
    e.read_only = true;
    e.request_parameters = Some(params);
    ctx.state.audit.append(e, false).await;

    let more = rows.len() as i64 > PER_PAGE;
    let page = &rows[..rows.len().min(PER_PAGE as usize)];
    let mut body = String::new();
    body.push_str(
        "<form class=\"toolbar\" method=\"get\" action=\"/console/audit\" role=\"search\">\
         <div><label for=\"attr\">Filter by</label><select id=\"attr\" name=\"attr\"><option value=\"\">Nothing</option>",
    );
    for (k, label) in ATTRIBUTES {
        let sel = if *k == key { " selected" } else { "" };
        body.push_str(&format!("<option value=\"{k}\"{sel}>{label}</option>"));
    }
    body.push_str(&format!(
        "</select></div><div><label for=\"value\">Value</label>\
         <input id=\"value\" name=\"value\" maxlength=\"{MAX_VALUE}\" value=\"{}\" spellcheck=\"false\"></div>\
         <div><label for=\"from\">From (UTC)</label><input id=\"from\" name=\"from\" type=\"date\" value=\"{}\"></div>\
         <div><label for=\"to\">To (UTC)</label><input id=\"to\" name=\"to\" type=\"date\" value=\"{}\"></div>\
         <div><button type=\"submit\">Look up</button></div></form>",
        attr(value),
        attr(from),
        attr(to)
    ));
    let rows: Vec<Vec<String>> = page
        .iter()
        .map(|r| {
            let record: Value = serde_json::from_str(&r.record).unwrap_or(Value::Null);
            let error = record["errorCode"].as_str().unwrap_or("");
            let who = r
                .username
                .clone()
                .or_else(|| record["userIdentity"]["invokedBy"].as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    record["userIdentity"]["type"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
            let resource = match (&r.resource_type, &r.resource_name) {
                (Some(_), Some(n)) => format!(
                    "<a href=\"{}\">{}</a>",
                    href("/console/audit", &[("attr", "ResourceName"), ("value", n)]),
                    esc(n)
                ),
                _ => String::new(),
            };
            vec![
                html::time_el(Some(r.event_time as f64 / 1000.0)),
                format!(
                    "<a href=\"{}\">{}</a><details><summary>Record</summary><pre class=\"json\" tabindex=\"0\"><code>{}</code></pre></details>",
                    href("/console/audit", &[("attr", "EventName"), ("value", &r.event_name)]),
                    esc(&r.event_name),
                    esc(&serde_json::to_string_pretty(&record).unwrap_or_default())
                ),
                esc(r.event_source.trim_end_matches(".amazonaws.com")),
                format!(
                    "<a href=\"{}\">{}</a>",
                    href("/console/audit", &[("attr", "Username"), ("value", &who)]),
                    esc(&who)
                ),
                format!(
                    "<code class=\"nowrap\">{}</code>",
                    esc(record["sourceIPAddress"].as_str().unwrap_or(""))
                ),
                resource,
                if error.is_empty() {
                    "<span class=\"muted\">—</span>".into()
                } else {
                    format!("<span class=\"sev sev-HIGH\">{}</span>", esc(error))
                },
            ]
        })
        .collect();
    body.push_str(&html::table(
        "Events, newest first",
        &[
            "Time",
            "Event",
            "Source",
            "User",
            "Source IP",
            "Resource",
            "Error",
        ],
        &rows,
    ));
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    let base = [("attr", key), ("value", value), ("from", from), ("to", to)];
    if ctx.param("after").is_some() {
        body.push_str(&format!(
            "<a class=\"button secondary\" href=\"{}\">Newest</a>",
            href("/console/audit", &base)
        ));
    }
    if more && let Some(last) = page.last() {
        let token = ctx.seal(&scope, &format!("{} {}", last.event_time, last.seq));
        let mut pairs = base.to_vec();
        pairs.push(("after", &token));
        body.push_str(&format!(
            "<a class=\"button\" rel=\"next\" href=\"{}\">Older events</a>",
            href("/console/audit", &pairs)
        ));
    }
    body.push_str("</nav>");
    Ok(ctx.page("Audit log", "audit", Vec::new(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_dates_are_read_strictly() {
        assert!(attribute("", "x").unwrap().is_none());
        assert!(attribute("EventName", "").unwrap().is_none());
        assert!(matches!(
            attribute("EventName", "PutImage").unwrap(),
            Some(AuditAttribute::EventName(n)) if n == "PutImage"
        ));
        assert!(attribute("ReadOnly", "maybe").is_err());
        assert!(attribute("Password", "x").is_err());
        assert_eq!(day_bound("1970-01-02", false).unwrap(), Some(86_400_000));
        assert_eq!(day_bound("1970-01-01", true).unwrap(), Some(86_399_999));
        assert!(day_bound("yesterday", false).is_err());
        assert!(day_bound("1970-01-02 00:00", false).is_err());
        assert_eq!(day_bound("", true).unwrap(), None);
    }
}
