//! Signing in and out. The sign-in form is protected like every other
//! form: before a session exists its CSRF token is bound to a random
//! cookie of its own (`berth_signin`, sent only to the sign-in page), and
//! its `Origin` must be this console's. A wrong account, user name,
//! password, key or secret is refused with one message that does not say
//! which; too many failures are throttled (`auth::sessions`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::html::{self, attr, esc};
use super::{
    Ctx, FORM_CAP, PREFIX, PageError, PageResult, cookie, page_response, read_form, redirect,
    same_origin, session_cookie,
};
use crate::app::AppState;
use crate::auth::sessions::{SESSION_LIFETIME_SECS, SignInError, csrf_ok, csrf_token};

/// The sign-in form's own cookie (its CSRF token's key).
const SIGNIN_COOKIE: &str = "berth_signin";

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with(PREFIX)
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && !n.starts_with("/console/sign-in") =>
        {
            n.to_string()
        }
        _ => PREFIX.to_string(),
    }
}

/// `GET /console/sign-in`: the form (with `error`, after a failed attempt).
pub async fn form(
    state: &Arc<AppState>,
    parts: &axum::http::request::Parts,
    error: Option<(StatusCode, String)>,
) -> Response {
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let next = safe_next(
        query
            .iter()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.as_str()),
    );
    // A fresh key for this form's CSRF token, kept in its own cookie.
    let mut key = [0u8; 24];
    crate::secrets::random_bytes(&mut key);
    let key = hex::encode(key);
    let csrf = csrf_token(&key);
    let scheme = crate::http::scheme(parts);
    let mut body = String::new();
    let (status, message) = match error {
        Some((s, m)) => (s, Some(m)),
        None => (StatusCode::OK, None),
    };
    if let Some(m) = &message {
        body.push_str(&html::notice("error", &esc(m)));
    }
    let account = &state.primary_account;
    let hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">",
        attr(&csrf),
        attr(&next)
    );
    body.push_str(&format!(
        "<div class=\"signin\">\
         <form method=\"post\" action=\"/console/sign-in\" class=\"card\">\
         <h2>IAM user</h2>{hidden}<input type=\"hidden\" name=\"mode\" value=\"password\">\
         <label for=\"account\">Account ID</label>\
         <input id=\"account\" name=\"account\" inputmode=\"numeric\" pattern=\"[0-9]{{12}}\" maxlength=\"12\" placeholder=\"{acct}\" autocomplete=\"organization\">\
         <p class=\"hint\">Leave empty for {acct}.</p>\
         <label for=\"user\">User name</label>\
         <input id=\"user\" name=\"user\" required maxlength=\"64\" autocomplete=\"username\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required maxlength=\"128\" autocomplete=\"current-password\">\
         <button type=\"submit\">Sign in</button></form>\
         <form method=\"post\" action=\"/console/sign-in\" class=\"card\">\
         <h2>Access key</h2>{hidden}<input type=\"hidden\" name=\"mode\" value=\"key\">\
         <label for=\"key_id\">Access key ID</label>\
         <input id=\"key_id\" name=\"key_id\" required maxlength=\"128\" autocomplete=\"username\" spellcheck=\"false\">\
         <label for=\"secret\">Secret access key</label>\
         <input id=\"secret\" name=\"secret\" type=\"password\" required maxlength=\"128\" autocomplete=\"current-password\">\
         <p class=\"hint\">An IAM user's key or the account root's key.</p>\
         <button type=\"submit\">Sign in with key</button></form></div>",
        acct = attr(account),
    ));
    let frame = html::Frame {
        title: "Sign in",
        section: "",
        who: None,
        crumbs: Vec::new(),
        refresh: None,
    };
    let mut r = page_response(status, html::page(&frame, &body));
    let secure = if scheme == crate::http::Scheme::Https {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SIGNIN_COOKIE}={key}; Path=/console/sign-in; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/sign-in`.
pub async fn submit(
    state: &Arc<AppState>,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Response {
    let host = crate::http::request_host(&parts.headers, &parts.uri);
    let scheme = crate::http::scheme(parts);
    if !same_origin(&parts.headers, host, scheme) {
        return PageError::Forbidden("The form was sent from another origin".into())
            .into_response(None);
    }
    let fields = match read_form(state, parts, body, FORM_CAP).await {
        Ok(f) => f,
        Err(e) => return e.into_response(None),
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let key = cookie(&parts.headers, SIGNIN_COOKIE).unwrap_or("");
    if key.is_empty() || !csrf_ok(key, get("csrf")) {
        return PageError::Forbidden(
            "The sign-in form is out of date (its CSRF token is missing or wrong); reload the page and try again"
                .into(),
        )
        .into_response(None);
    }
    let ip = crate::http::client_ip(parts);
    let too_long = |v: &str, max: usize| v.chars().count() > max;
    let result = match get("mode") {
        "password" => {
            let account = match get("account").trim() {
                "" => state.primary_account.clone(),
                a => a.to_string(),
            };
            let (user, password) = (get("user").trim(), get("password"));
            if too_long(user, 64) || too_long(password, 128) || too_long(&account, 12) {
                Err(SignInError::Refused)
            } else {
                state
                    .access
                    .sign_in_password(&account, user, password, ip)
                    .await
            }
        }
        "key" => {
            let (id, secret) = (get("key_id").trim(), get("secret"));
            if too_long(id, 128) || too_long(secret, 128) {
                Err(SignInError::Refused)
            } else {
                state.access.sign_in_key(id, secret, ip).await
            }
        }
        _ => {
            return PageError::Bad("Choose a way to sign in".into()).into_response(None);
        }
    };
    let method = if get("mode") == "key" {
        "AccessKey"
    } else {
        "Password"
    };
    let claimed_account = match get("account").trim() {
        a if get("mode") == "password"
            && a.len() == 12
            && a.bytes().all(|b| b.is_ascii_digit()) =>
        {
            a
        }
        _ => state.primary_account.as_str(),
    };
    console_login(state, parts, &result, method, claimed_account).await;
    match result {
        Ok(s) => {
            let next = safe_next(Some(get("next")));
            let mut r = redirect(&next);
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                session_cookie(&s.token, SESSION_LIFETIME_SECS, scheme),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{SIGNIN_COOKIE}=; Path=/console/sign-in; HttpOnly; SameSite=Strict; Max-Age=0"
            )) {
                h.append(header::SET_COOKIE, v);
            }
            r
        }
        Err(SignInError::Refused) => {
            form(
                state,
                parts,
                Some((
                    StatusCode::UNAUTHORIZED,
                    "The account, user name, password or key is incorrect.".into(),
                )),
            )
            .await
        }
        Err(SignInError::Throttled(secs)) => {
            form(
                state,
                parts,
                Some((
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many failed sign-ins. Try again in {secs} seconds."),
                )),
            )
            .await
        }
        Err(SignInError::Meta(m)) => PageError::Internal(m.to_string()).into_response(None),
    }
}

/// The sign-in's audit event, as CloudTrail records console sign-ins
/// (`signin.amazonaws.com` `ConsoleLogin`, Success or Failure; a failed
/// attempt's user name is hidden, as CloudTrail hides it: people type
/// passwords into the wrong field).
async fn console_login(
    state: &AppState,
    parts: &axum::http::request::Parts,
    result: &Result<crate::auth::sessions::NewSession, SignInError>,
    method: &str,
    claimed_account: &str,
) {
    use crate::audit::{Event, Identity, IdentityKind};
    let signed_in = match result {
        Ok(s) => state.access.session(&s.token).await.ok().flatten(),
        Err(_) => None,
    };
    let identity = match &signed_in {
        Some(s) => s.caller.audit_identity(),
        None => Identity {
            kind: IdentityKind::IamUser,
            principal_id: String::new(),
            arn: None,
            account_id: claimed_account.to_string(),
            access_key_id: None,
            user_name: Some("HIDDEN_DUE_TO_SECURITY_REASONS".into()),
            invoked_by: None,
        },
    };
    let account = identity.account_id.clone();
    let mut e = Event::new(SIGNIN, "ConsoleLogin", &state.region, &account, identity);
    e.source_ip = crate::http::client_ip(parts)
        .map(|i| i.to_string())
        .unwrap_or_default();
    e.user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(512).collect());
    if let Some(id) = crate::http::RequestId::of(parts) {
        e.request_id = id.to_string();
    }
    let outcome = if result.is_ok() { "Success" } else { "Failure" };
    e.response_elements = Some(serde_json::json!({ "ConsoleLogin": outcome }));
    e.additional =
        Some(serde_json::json!({ "LoginTo": PREFIX, "MFAUsed": "No", "LoginMethod": method }));
    match result {
        Ok(_) => {}
        Err(SignInError::Throttled(_)) => e.error_message = Some("Too many failed sign-ins".into()),
        Err(_) => e.error_message = Some("Failed authentication".into()),
    }
    // A session opened is a change: durable before the cookie is handed out.
    state.audit.append(e, result.is_ok()).await;
}

/// CloudTrail's event source of console sign-ins.
const SIGNIN: &str = "signin.amazonaws.com";

/// `POST /console/sign-out` (CSRF checked by the caller): the session ends
/// in the store, for every node, and the cookie is removed.
pub async fn sign_out(ctx: &Ctx, token: &str) -> PageResult {
    ctx.state
        .access
        .sign_out(token)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let mut r = redirect("/console/sign-in");
    r.headers_mut()
        .append(header::SET_COOKIE, session_cookie("", 0, ctx.scheme));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::COOKIE;
    use super::*;

    #[test]
    fn sign_in_sends_back_only_to_console_pages() {
        assert_eq!(
            safe_next(Some("/console/repository?name=a")),
            "/console/repository?name=a"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console/sign-in?next=/x",
            "/v2/",
            "/console\\..\\",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), PREFIX, "{bad}");
        }
        assert_eq!(safe_next(None), PREFIX);
        // COOKIE is the session's; the form's cookie is another.
        assert_ne!(COOKIE, SIGNIN_COOKIE);
    }
}
