//! The web console: server-rendered HTML under `/console/` for people with
//! a browser — repositories, a repository's images, settings, lifecycle
//! policy and repository policy, an image's manifest, layers, findings and
//! referrers, the registry's settings and replication, and the audit log.
//!
//! A face over a face, as `cloudformation_api` is: every page is made of
//! ECR operations called in process as the signed-in caller
//! (`ecr_api::call`), so the console shows exactly what that caller could
//! see with the aws CLI, with the same authorization, errors and audit
//! events. What no ECR operation shows (the repository search, storage by
//! day, replication lag per destination, referrers) comes from the
//! services, each authorized explicitly through `Access::authorize` with the
//! ECR action that governs it.
//!
//! This module owns the console's HTTP: routes, the session cookie, CSRF
//! checks on every POST (with the `Origin` check), bounded forms and query
//! strings, security headers, and the pages ([`html`] escapes everything).
//! Sessions, passwords and the sign-in throttle are `auth`'s
//! (`auth::sessions`, `auth::passwords`).

mod assets;
mod audit;
mod html;
mod image;
mod registry;
mod repositories;
mod repository;
mod signin;

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::AppState;
use crate::auth::sessions::{Session, csrf_ok, csrf_token};
use crate::ecr_api::EcrError;
use crate::http::Scheme;

/// Where the console lives.
pub const PREFIX: &str = "/console/";
/// The session cookie.
const COOKIE: &str = "berth_session";
/// Largest form of a page that edits a policy: a 30,720-character lifecycle
/// policy, each character up to 4 UTF-8 bytes percent-encoded (×3).
const POLICY_FORM_CAP: usize = 30_720 * 12 + (8 << 10);
/// Largest form of any other page.
const FORM_CAP: usize = 8 << 10;
/// Longest query string a page reads.
const QUERY_CAP: usize = 4096;

/// `GET /` (and `HEAD /`): a browser (one that accepts `text/html`) is sent
/// to the console; anything else gets what it always got, 405 (the APIs
/// answer `POST /`).
pub async fn root(req: Request) -> Response {
    let wants_html = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/html")));
    if wants_html && matches!(*req.method(), Method::GET | Method::HEAD) {
        return redirect(PREFIX);
    }
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// Why a page is not shown; each becomes a page of its own.
#[derive(Debug)]
pub enum PageError {
    /// No live session: to the sign-in page (and back here after).
    SignIn(String),
    /// The caller may not do this (an `AccessDeniedException`, or an
    /// explicit check): the message says what was refused.
    Denied(String),
    NotFound(String),
    /// A form or query the console refuses (too long, malformed).
    Bad(String),
    /// A POST without the session's CSRF token, or from another origin.
    Forbidden(String),
    /// Too many requests (the sign-in throttle, the body budget).
    Throttled(String),
    /// Our fault; the message is logged, the page says less.
    Internal(String),
}

impl PageError {
    /// An ECR operation's error as the page it becomes.
    pub fn from_ecr(e: EcrError) -> PageError {
        match e.name {
            "AccessDeniedException" => PageError::Denied(e.message),
            n if n.ends_with("NotFoundException") => PageError::NotFound(e.message),
            "ThrottlingException" => PageError::Throttled(e.message),
            _ if e.status >= 500 => PageError::Internal(format!("{}: {}", e.name, e.message)),
            _ => PageError::Bad(format!("{}: {}", e.name, e.message)),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            PageError::SignIn(_) => StatusCode::SEE_OTHER,
            PageError::Denied(_) | PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Bad(_) => StatusCode::BAD_REQUEST,
            PageError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as a page, in the frame of `ctx` when signed in.
    fn into_response(self, ctx: Option<&Ctx>) -> Response {
        let (title, text) = match &self {
            PageError::SignIn(next) => {
                let target = format!("{PREFIX}sign-in?next={}", html::q(next));
                return redirect(&target);
            }
            PageError::Denied(m) => ("Not authorized", m.clone()),
            PageError::NotFound(m) => ("Not found", m.clone()),
            PageError::Bad(m) => ("Request refused", m.clone()),
            PageError::Forbidden(m) => ("Forbidden", m.clone()),
            PageError::Throttled(m) => ("Too many requests", m.clone()),
            PageError::Internal(m) => {
                tracing::warn!(error = %m, "console page failed");
                (
                    "Something went wrong",
                    "The server could not show this page; the error is in its log.".to_string(),
                )
            }
        };
        let mut body = html::notice("error", &html::esc(&text));
        if matches!(self, PageError::Denied(_)) {
            body.push_str(
                "<p>Your identity policies (or the resource's policy) do not allow this. \
                 Ask an administrator for access, or <a href=\"/console/\">go back to the repositories</a>.</p>",
            );
        }
        let frame = html::Frame {
            title,
            section: "",
            who: ctx.map(|c| (c.arn(), c.csrf.as_str())),
            crumbs: Vec::new(),
            refresh: None,
        };
        page_response(self.status(), html::page(&frame, &body))
    }
}

pub type PageResult = Result<Response, PageError>;

/// A signed-in request: the session, the caller, and where it came from.
pub struct Ctx {
    pub state: Arc<AppState>,
    pub session: Session,
    /// The session's CSRF token (for the forms of the page).
    pub csrf: String,
    host: Option<String>,
    scheme: Scheme,
    ip: Option<IpAddr>,
    query: Vec<(String, String)>,
    /// The browser's `User-Agent` (at most 512 characters), for audit events.
    user_agent: Option<String>,
    request_id: String,
}

impl Ctx {
    pub fn arn(&self) -> &str {
        &self.session.caller.principal.arn
    }

    /// The caller's own registry in the home region (the one the console shows).
    pub fn registry(&self) -> String {
        self.state
            .access
            .registry_key(&self.session.caller.principal.account, &self.state.region)
    }

    /// A query parameter (the last one of its name).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter that must be present, at most `max` characters.
    pub fn required(&self, name: &str, max: usize) -> Result<&str, PageError> {
        match self.param(name) {
            Some(v) if !v.is_empty() && v.chars().count() <= max => Ok(v),
            Some(v) if !v.is_empty() => Err(PageError::Bad(format!(
                "The parameter {name} is longer than {max} characters"
            ))),
            _ => Err(PageError::Bad(format!("The parameter {name} is required"))),
        }
    }

    /// An optional query parameter, at most `max` characters.
    pub fn optional(&self, name: &str, max: usize) -> Result<&str, PageError> {
        match self.param(name) {
            Some(v) if v.chars().count() > max => Err(PageError::Bad(format!(
                "The parameter {name} is longer than {max} characters"
            ))),
            Some(v) => Ok(v),
            None => Ok(""),
        }
    }

    /// Run ECR operation `op` as the signed-in caller (the ECR face, in process).
    pub async fn ecr(&self, op: &str, input: Value) -> Result<Value, EcrError> {
        let from = crate::ecr_api::InProcess {
            state: &self.state,
            caller: &self.session.caller,
            host: self.host.as_deref(),
            scheme: self.scheme,
            source_ip: self.ip,
            invoked_by: None,
            user_agent: self.user_agent.as_deref(),
        };
        crate::ecr_api::call(&from, op, input).await
    }

    /// [`Ctx::ecr`], an error becoming the page it means.
    pub async fn call(&self, op: &str, input: Value) -> Result<Value, PageError> {
        self.ecr(op, input).await.map_err(PageError::from_ecr)
    }

    /// An audit event of this caller's, from this request (address, browser, request id).
    pub fn event(&self, source: &'static str, name: &str, account: &str) -> crate::audit::Event {
        let mut e = crate::audit::Event::new(
            source,
            name,
            &self.state.region,
            account,
            self.session.caller.audit_identity(),
        );
        e.source_ip = self.ip.map(|i| i.to_string()).unwrap_or_default();
        e.user_agent = self.user_agent.clone();
        e.request_id = self.request_id.clone();
        e
    }

    /// Refuse unless the caller may perform `ecr:<op>` on repository `repo`
    /// (or the registry): the explicit check of what no ECR operation shows.
    pub async fn authorize(&self, op: &str, repo: Option<&str>) -> Result<(), PageError> {
        let action = format!("ecr:{op}");
        let registry = self.registry();
        let allowed = self
            .state
            .access
            .authorize(&self.session.caller, &action, &registry, repo, self.ip)
            .await
            .map_err(|e| PageError::Internal(e.to_string()))?;
        if allowed {
            return Ok(());
        }
        let account = &self.session.caller.principal.account;
        let resource = match repo {
            Some(r) => crate::auth::repository_arn(&self.state.region, account, r),
            None => format!("arn:aws:ecr:{}:{account}:*", self.state.region),
        };
        Err(PageError::Denied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource}",
            self.arn()
        )))
    }

    /// The frame of a page of this session.
    pub fn frame<'a>(
        &'a self,
        title: &'a str,
        section: &'a str,
        crumbs: Vec<(String, String)>,
    ) -> html::Frame<'a> {
        html::Frame {
            title,
            section,
            who: Some((self.arn(), self.csrf.as_str())),
            crumbs,
            refresh: None,
        }
    }

    /// A page of this session.
    pub fn page(
        &self,
        title: &str,
        section: &str,
        crumbs: Vec<(String, String)>,
        body: &str,
    ) -> Response {
        page_response(
            StatusCode::OK,
            html::page(&self.frame(title, section, crumbs), body),
        )
    }

    /// Seal `cursor` as a page token bound to `scope` and this caller.
    pub fn seal(&self, scope: &str, cursor: &str) -> String {
        self.state
            .access
            .seal_page_token(&self.token_scope(scope), cursor)
    }

    /// The cursor of a page token [`Ctx::seal`] made for `scope`.
    pub fn open(&self, scope: &str, token: &str) -> Result<String, PageError> {
        self.state
            .access
            .open_page_token(&self.token_scope(scope), token)
            .ok_or_else(|| PageError::Bad("The page link is invalid or out of date".into()))
    }

    fn token_scope(&self, scope: &str) -> String {
        format!(
            "console\n{scope}\n{}",
            self.session.caller.principal.account
        )
    }
}

/// A form read from a POST: its fields, once the CSRF token and origin are checked.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a POST comes from the console's own pages: its `Origin` (or,
/// without one, its `Referer`) names this host and scheme. A request
/// with neither is left to the CSRF token alone.
fn same_origin(headers: &HeaderMap, host: Option<&str>, scheme: Scheme) -> bool {
    let Some(host) = host else {
        return false;
    };
    let expected = format!("{}://{host}", scheme.as_str());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(o) = origin {
        return o.eq_ignore_ascii_case(&expected);
    }
    match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
        Some(r) => {
            r.len() >= expected.len()
                && r[..expected.len()].eq_ignore_ascii_case(&expected)
                && matches!(r.as_bytes().get(expected.len()), None | Some(b'/'))
        }
        None => true,
    }
}

/// Read a form-encoded body of at most `cap` bytes (within the body memory
/// budget and `api_body_timeout`).
async fn read_form(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: Body,
    cap: usize,
) -> Result<Vec<(String, String)>, PageError> {
    if !crate::http::is_form_encoded(&parts.headers) {
        return Err(PageError::Bad(
            "A console form is sent as application/x-www-form-urlencoded".into(),
        ));
    }
    let declared = crate::http::content_length(&parts.headers);
    if declared.is_some_and(|n| n > cap) {
        return Err(PageError::Bad(format!(
            "The form is larger than {cap} bytes"
        )));
    }
    let ip = crate::http::client_ip(parts).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let _room = state
        .body_budget
        .reserve(ip, declared.unwrap_or(cap))
        .await
        .map_err(|e| PageError::Throttled(e.to_string()))?;
    let bytes = crate::http::read_body(body, declared, cap, state.http.api_body_timeout)
        .await
        .map_err(|e| PageError::Bad(e.to_string()))?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A state-changing POST of a signed-in session: same origin, within
/// `cap`, and carrying the session's CSRF token — or refused (403) before
/// anything is done.
async fn session_form(
    ctx: &Ctx,
    parts: &axum::http::request::Parts,
    body: Body,
    cap: usize,
    token: &str,
) -> Result<Form, PageError> {
    if !same_origin(&parts.headers, ctx.host.as_deref(), ctx.scheme) {
        return Err(PageError::Forbidden(
            "The form was sent from another origin".into(),
        ));
    }
    let fields = read_form(&ctx.state, parts, body, cap).await?;
    let form = Form(fields);
    match form.get("csrf") {
        Some(t) if csrf_ok(token, t) => Ok(form),
        _ => Err(PageError::Forbidden(
            "The form's CSRF token is missing or wrong; reload the page and try again".into(),
        )),
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` of the session cookie: `value` for `max_age` seconds
/// (0 removes it); `Secure` when served over HTTPS.
fn session_cookie(value: &str, max_age: i64, scheme: Scheme) -> HeaderValue {
    let secure = if scheme == Scheme::Https {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Headers every console response carries: no framing, no sniffing, no
/// caching of pages, a policy that allows only the console's own script
/// and style (charts are inline SVG, no inline script or style at all).
fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn page_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure_headers(h);
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure_headers(r.headers_mut());
    r
}

/// Entry point for `/console` and everything below it.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut resp = route(&state, parts, Body::new(body), &path).await;
    resp.extensions_mut()
        .insert(crate::http::OperationLabel("console"));
    resp
}

async fn route(
    state: &Arc<AppState>,
    parts: axum::http::request::Parts,
    body: Body,
    path: &str,
) -> Response {
    let method = parts.method.clone();
    if path == "/console" {
        return redirect(PREFIX);
    }
    if let Some(name) = path.strip_prefix("/console/static/") {
        return assets::serve(name);
    }
    if parts.uri.query().is_some_and(|q| q.len() > QUERY_CAP) {
        return PageError::Bad(format!("The query string is longer than {QUERY_CAP} bytes"))
            .into_response(None);
    }
    let sign_in = path == "/console/sign-in";
    match (&method, sign_in) {
        (&Method::GET | &Method::HEAD, true) => {
            return signin::form(state, &parts, None).await;
        }
        (&Method::POST, true) => return signin::submit(state, &parts, body).await,
        (_, true) => return method_not_allowed("GET, POST"),
        _ => {}
    }
    let ctx = match signed_in(state, &parts).await {
        Ok(c) => c,
        Err(e) => return e.into_response(None),
    };
    let token = cookie(&parts.headers, COOKIE).unwrap_or("").to_string();
    let get = matches!(method, Method::GET | Method::HEAD);
    let post = method == Method::POST;
    let result = match path {
        "/console/" if get => repositories::list(&ctx).await,
        "/console/repository" if get => repository::show(&ctx).await,
        "/console/repository" if post => {
            match session_form(&ctx, &parts, body, POLICY_FORM_CAP, &token).await {
                Ok(form) => repository::post(&ctx, &form).await,
                Err(e) => Err(e),
            }
        }
        "/console/image" if get => image::show(&ctx).await,
        "/console/registry" if get => registry::show(&ctx).await,
        "/console/audit" if get => audit::show(&ctx).await,
        "/console/sign-out" if post => {
            match session_form(&ctx, &parts, body, FORM_CAP, &token).await {
                Ok(_) => signin::sign_out(&ctx, &token).await,
                Err(e) => Err(e),
            }
        }
        "/console/"
        | "/console/repository"
        | "/console/image"
        | "/console/registry"
        | "/console/audit" => {
            return method_not_allowed(if path == "/console/repository" {
                "GET, POST"
            } else {
                "GET"
            });
        }
        "/console/sign-out" => return method_not_allowed("POST"),
        _ => Err(PageError::NotFound(format!(
            "There is no console page at {path}"
        ))),
    };
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(Some(&ctx)),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// A request's `User-Agent`, as the console's audit events carry it
/// (`berth-console` before the browser's, at most 512 characters).
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Some(
        format!("berth-console {}", ua.chars().take(512).collect::<String>())
            .trim_end()
            .to_string(),
    )
}

/// The session of a request, or where to sign in.
async fn signed_in(
    state: &Arc<AppState>,
    parts: &axum::http::request::Parts,
) -> Result<Ctx, PageError> {
    let next = if parts.method == Method::GET {
        match parts.uri.query() {
            Some(q) => format!("{}?{q}", parts.uri.path()),
            None => parts.uri.path().to_string(),
        }
    } else {
        PREFIX.to_string()
    };
    let Some(token) = cookie(&parts.headers, COOKIE) else {
        return Err(PageError::SignIn(next));
    };
    let session = state
        .access
        .session(token)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .ok_or(PageError::SignIn(next))?;
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Ctx {
        state: state.clone(),
        csrf: csrf_token(token),
        session,
        host: crate::http::request_host(&parts.headers, &parts.uri).map(str::to_string),
        scheme: crate::http::scheme(parts),
        ip: crate::http::client_ip(parts),
        query,
        user_agent: user_agent(&parts.headers),
        request_id: crate::http::RequestId::of(parts)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_match_the_host_and_scheme() {
        let mut h = HeaderMap::new();
        let host = Some("reg.example:5000");
        // No Origin, no Referer: left to the CSRF token.
        assert!(same_origin(&h, host, Scheme::Http));
        h.insert(header::ORIGIN, "http://reg.example:5000".parse().unwrap());
        assert!(same_origin(&h, host, Scheme::Http));
        assert!(!same_origin(&h, host, Scheme::Https));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h, host, Scheme::Http));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h, host, Scheme::Http));
        let mut h = HeaderMap::new();
        h.insert(
            header::REFERER,
            "http://reg.example:5000/console/repository"
                .parse()
                .unwrap(),
        );
        assert!(same_origin(&h, host, Scheme::Http));
        h.insert(
            header::REFERER,
            "http://reg.example:50001/console/".parse().unwrap(),
        );
        assert!(!same_origin(&h, host, Scheme::Http));
        assert!(!same_origin(&h, None, Scheme::Http));
    }

    #[test]
    fn cookies_are_found_by_exact_name_and_set_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "xberth_session=no; berth_session=yes; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("yes"));
        let c = session_cookie("t", 60, Scheme::Https);
        let c = c.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/console/",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let plain = session_cookie("t", 60, Scheme::Http);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn ecr_errors_become_the_pages_they_mean() {
        let denied = EcrError::access_denied("User: x is not authorized".to_string());
        assert!(matches!(PageError::from_ecr(denied), PageError::Denied(_)));
        let nf = EcrError::repository_not_found("a", "123456789012");
        assert!(matches!(PageError::from_ecr(nf), PageError::NotFound(_)));
        let bad = EcrError::invalid("nope");
        assert!(matches!(PageError::from_ecr(bad), PageError::Bad(_)));
    }
}
