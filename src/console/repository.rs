//! A repository's pages (`/console/repository?name=…&view=…`):
//! - `images` (the default): DescribeImages a page at a time (ECR's own
//!   page tokens, so a 10,000-image repository costs one page per view),
//!   a lookup by tag or digest, the pull command, and the storage chart
//!   (image bytes by push day; explicitly authorized as
//!   `ecr:DescribeImages`);
//! - `settings`: tag mutability, scan on push, encryption
//!   (PutImageTagMutability, PutImageScanningConfiguration to change them);
//! - `lifecycle`: the policy in an editor (GetLifecyclePolicy,
//!   PutLifecyclePolicy, DeleteLifecyclePolicy) and its preview
//!   (StartLifecyclePolicyPreview, GetLifecyclePolicyPreview);
//! - `policy`: the repository policy (GetRepositoryPolicy).
//!
//! Every call is the signed-in caller's; POSTs carry the session's CSRF
//! token (checked before this module sees the form).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::html::{self, attr, esc, href};
use super::{Ctx, Form, PageError, PageResult};

/// Longest repository name ECR accepts.
pub const MAX_NAME: usize = 256;
/// Images per page.
const IMAGES_PER_PAGE: u64 = 50;
/// Preview results per page.
const PREVIEW_PER_PAGE: u64 = 100;
/// A policy to start from when the repository has none.
const EXAMPLE_POLICY: &str = r#"{
  "rules": [
    {
      "rulePriority": 1,
      "description": "Expire untagged images older than 14 days",
      "selection": {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14
      },
      "action": { "type": "expire" }
    }
  ]
}"#;

const VIEWS: &[(&str, &str)] = &[
    ("images", "Images"),
    ("settings", "Settings"),
    ("lifecycle", "Lifecycle policy"),
    ("policy", "Repository policy"),
];

/// The repository as DescribeRepositories shows it to the caller (an
/// AccessDenied here is the page's answer: the caller may not see it).
async fn describe(ctx: &Ctx, name: &str) -> Result<Value, PageError> {
    let out = ctx
        .call("DescribeRepositories", json!({ "repositoryNames": [name] }))
        .await?;
    out["repositories"]
        .get(0)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("The repository {name} does not exist")))
}

/// Severity counts as badges.
pub fn severity_badges(counts: &Value) -> String {
    let mut s = String::new();
    for (sev, _) in html::SEVERITIES {
        if let Some(n) = counts[*sev].as_u64().filter(|n| *n > 0) {
            s.push_str(&format!(
                "<span class=\"sev sev-{sev}\" title=\"{sev}\">{} {n}</span>",
                &sev[..1]
            ));
        }
    }
    s
}

/// An image's scan status and severity counts, as a table cell.
pub fn scan_cell(img: &Value) -> String {
    let status = img["imageScanStatus"]["status"].as_str();
    let counts = &img["imageScanFindingsSummary"]["findingSeverityCounts"];
    match status {
        None => "<span class=\"muted\">not scanned</span>".into(),
        Some("COMPLETE") => {
            let b = severity_badges(counts);
            if b.is_empty() {
                "no findings".into()
            } else {
                b
            }
        }
        Some(s) => esc(&s.to_ascii_lowercase().replace('_', " ")),
    }
}

fn tags_cell(img: &Value) -> String {
    let tags: Vec<String> = img["imageTags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(|t| format!("<span class=\"tag\">{}</span>", esc(t)))
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        "<span class=\"muted\">untagged</span>".into()
    } else {
        tags.join("")
    }
}

/// A command with a button that copies it.
pub fn copy_command(id: &str, label: &str, command: &str) -> String {
    format!(
        "<div class=\"pull\"><span class=\"muted\">{}</span><code id=\"{id}\">{}</code>\
         <button type=\"button\" class=\"secondary\" data-copy=\"{}\" aria-controls=\"{id}\">Copy</button></div>",
        esc(label),
        esc(command),
        attr(command)
    )
}

/// `GET /console/repository`.
pub async fn show(ctx: &Ctx) -> PageResult {
    let name = ctx.required("name", MAX_NAME)?;
    let view = match ctx.optional("view", 16)? {
        "" => "images",
        v if VIEWS.iter().any(|(id, _)| *id == v) => v,
        v => return Err(PageError::Bad(format!("Unknown view {v:?}"))),
    };
    let repo = describe(ctx, name).await?;
    let body = match view {
        "settings" => settings(ctx, name, &repo).await?,
        "lifecycle" => lifecycle(ctx, name, None, None).await?,
        "policy" => policy(ctx, name).await?,
        _ => images(ctx, name, &repo).await?,
    };
    // While a preview is being computed, the page looks again shortly.
    let again = format!(
        "/console/repository?name={}&view=lifecycle&previewing=1",
        html::q(name)
    );
    Ok(frame(ctx, name, view, &body.0, body.1.then_some(again)))
}

/// The page of view `view` of repository `name` around `body`.
fn frame(ctx: &Ctx, name: &str, view: &str, body: &str, refresh: Option<String>) -> Response {
    let mut tabs = String::from("<ul class=\"tabs\" role=\"list\">");
    for (id, label) in VIEWS {
        let current = if *id == view {
            " aria-current=\"page\""
        } else {
            ""
        };
        let pairs: Vec<(&str, &str)> = if *id == "images" {
            vec![("name", name)]
        } else {
            vec![("name", name), ("view", id)]
        };
        tabs.push_str(&format!(
            "<li><a href=\"{}\"{current}>{label}</a></li>",
            href("/console/repository", &pairs)
        ));
    }
    tabs.push_str("</ul>");
    let mut f = ctx.frame(
        name,
        "repositories",
        vec![("Repositories".into(), "/console/".into())],
    );
    f.refresh = refresh;
    super::page_response(StatusCode::OK, html::page(&f, &format!("{tabs}{body}")))
}

/// The images view: (HTML, whether to refresh).
async fn images(ctx: &Ctx, name: &str, repo: &Value) -> Result<(String, bool), PageError> {
    let find = ctx.optional("find", 300)?.trim();
    let after = ctx.optional("after", 4096)?;
    let filter = match ctx.optional("tags", 10)? {
        "" => None,
        t @ ("TAGGED" | "UNTAGGED") => Some(t),
        other => return Err(PageError::Bad(format!("Unknown tag filter {other:?}"))),
    };
    let mut input = json!({ "repositoryName": name });
    if !find.is_empty() {
        let id = if find.starts_with("sha256:") || find.starts_with("sha512:") {
            json!({ "imageDigest": find })
        } else {
            json!({ "imageTag": find })
        };
        input["imageIds"] = json!([id]);
    } else {
        input["maxResults"] = json!(IMAGES_PER_PAGE);
        if !after.is_empty() {
            input["nextToken"] = json!(after);
        }
        if let Some(f) = filter {
            input["filter"] = json!({ "tagStatus": f });
        }
    }
    let mut body = String::new();
    let uri = repo["repositoryUri"].as_str().unwrap_or("");
    let (list, not_found) = match ctx.ecr("DescribeImages", input).await {
        Ok(v) => (v, false),
        Err(e) if e.name == "ImageNotFoundException" && !find.is_empty() => (json!({}), true),
        Err(e) => return Err(PageError::from_ecr(e)),
    };
    let images = list["imageDetails"].as_array().cloned().unwrap_or_default();
    // The pull command of the newest tagged image of the page.
    let tag = images
        .iter()
        .rev()
        .find_map(|i| i["imageTags"].get(0).and_then(Value::as_str))
        .unwrap_or("latest");
    body.push_str(&copy_command(
        "pull-cmd",
        "Pull",
        &format!("docker pull {uri}:{tag}"),
    ));
    // The storage chart and totals (no ECR operation shows these; they are
    // the images DescribeImages would list, so that is the action checked).
    match ctx.authorize("DescribeImages", Some(name)).await {
        Ok(()) => {
            let reg = &ctx.state.registry;
            let key = crate::registry::Repo {
                registry: &ctx.registry(),
                name,
            };
            let (count, total) = reg
                .repository_usage(key)
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?;
            let days = reg
                .storage_by_day(key, 3650)
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?;
            let mut sum = 0.0;
            let points: Vec<(i64, f64)> = days
                .iter()
                .map(|(d, b)| {
                    sum += *b as f64;
                    (*d, sum)
                })
                .collect();
            body.push_str("<div class=\"grid2\"><div>");
            body.push_str(&html::facts(&[
                ("Images", count.to_string()),
                ("Stored (sum of image sizes)", esc(&html::bytes(total))),
                ("Created", html::time_el(repo["createdAt"].as_f64())),
            ]));
            body.push_str("</div><div>");
            body.push_str(&html::area_chart(
                "Storage used over time (image bytes by push date)",
                &points,
                &|v| html::bytes(v as i64),
            ));
            body.push_str("</div></div>");
        }
        Err(PageError::Denied(_)) => {}
        Err(e) => return Err(e),
    }
    // Lookup and filter.
    body.push_str(&format!(
        "<form class=\"toolbar\" method=\"get\" action=\"/console/repository\" role=\"search\">\
         <input type=\"hidden\" name=\"name\" value=\"{}\">\
         <div><label for=\"find\">Find by tag or digest</label>\
         <input id=\"find\" name=\"find\" maxlength=\"300\" value=\"{}\" spellcheck=\"false\"></div>\
         <div><label for=\"tags\">Show</label><select id=\"tags\" name=\"tags\">",
        attr(name),
        attr(find)
    ));
    for (v, label) in [
        ("", "All images"),
        ("TAGGED", "Tagged"),
        ("UNTAGGED", "Untagged"),
    ] {
        let sel = if Some(v) == filter || (v.is_empty() && filter.is_none()) {
            " selected"
        } else {
            ""
        };
        body.push_str(&format!("<option value=\"{v}\"{sel}>{label}</option>"));
    }
    body.push_str("</select></div><div><button type=\"submit\">Show</button></div></form>");
    if not_found {
        body.push_str(&html::notice(
            "info",
            &format!("No image {} in this repository.", esc(find)),
        ));
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let digest = i["imageDigest"].as_str().unwrap_or("");
            vec![
                tags_cell(i),
                format!(
                    "<a href=\"{}\">{}</a>",
                    href("/console/image", &[("name", name), ("digest", digest)]),
                    html::short_digest(digest)
                ),
                esc(&html::bytes(i["imageSizeInBytes"].as_i64().unwrap_or(0))),
                html::time_el(i["imagePushedAt"].as_f64()),
                html::time_el(i["lastRecordedPullTime"].as_f64()),
                scan_cell(i),
            ]
        })
        .collect();
    body.push_str(&html::table(
        "Images, oldest push first",
        &["Tags", "Digest", "Size", "Pushed", "Last pulled", "Scan"],
        &rows,
    ));
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    let tags = filter.unwrap_or("");
    if !after.is_empty() || !find.is_empty() {
        body.push_str(&format!(
            "<a class=\"button secondary\" href=\"{}\">First page</a>",
            href("/console/repository", &[("name", name), ("tags", tags)])
        ));
    }
    if let Some(t) = list["nextToken"].as_str() {
        body.push_str(&format!(
            "<a class=\"button\" rel=\"next\" href=\"{}\">Next page</a>",
            href(
                "/console/repository",
                &[("name", name), ("tags", tags), ("after", t)]
            )
        ));
    }
    body.push_str("</nav>");
    Ok((body, false))
}

async fn settings(ctx: &Ctx, name: &str, repo: &Value) -> Result<(String, bool), PageError> {
    let mut body = String::new();
    if ctx.param("saved").is_some() {
        body.push_str(&html::notice("ok", "Settings saved."));
    }
    let mutability = repo["imageTagMutability"].as_str().unwrap_or("MUTABLE");
    let scan_on_push = repo["imageScanningConfiguration"]["scanOnPush"].as_bool() == Some(true);
    let enc = &repo["encryptionConfiguration"];
    let mut facts = vec![
        ("Tag mutability", esc(mutability)),
        (
            "Scan on push",
            (if scan_on_push { "on" } else { "off" }).to_string(),
        ),
        (
            "Encryption",
            esc(enc["encryptionType"].as_str().unwrap_or("AES256")),
        ),
        (
            "Repository URI",
            format!(
                "<code>{}</code>",
                esc(repo["repositoryUri"].as_str().unwrap_or(""))
            ),
        ),
        (
            "ARN",
            format!(
                "<code>{}</code>",
                esc(repo["repositoryArn"].as_str().unwrap_or(""))
            ),
        ),
    ];
    if let Some(k) = enc["kmsKey"].as_str() {
        facts.push(("KMS key", format!("<code>{}</code>", esc(k))));
    }
    if let Some(ex) = repo["imageTagMutabilityExclusionFilters"].as_array() {
        let f: Vec<String> = ex
            .iter()
            .filter_map(|f| f["filter"].as_str())
            .map(esc)
            .collect();
        if !f.is_empty() {
            facts.push(("Mutability exclusions", f.join(", ")));
        }
    }
    body.push_str(&html::facts(&facts));
    let with_exclusions = mutability.ends_with("_WITH_EXCLUSION");
    body.push_str(&format!(
        "<form method=\"post\" action=\"/console/repository\" class=\"card\">{}\
         <input type=\"hidden\" name=\"name\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"settings\">\
         <h2>Change settings</h2>\
         <fieldset><legend>Tag mutability</legend>",
        html::csrf_field(&ctx.csrf),
        attr(name)
    ));
    for (v, label) in [
        ("MUTABLE", "Mutable: a tag can be moved to another image"),
        ("IMMUTABLE", "Immutable: a pushed tag never changes"),
    ] {
        let checked = if mutability == v || mutability.strip_suffix("_WITH_EXCLUSION") == Some(v) {
            " checked"
        } else {
            ""
        };
        body.push_str(&format!(
            "<div class=\"choice\"><input type=\"radio\" id=\"m-{v}\" name=\"mutability\" value=\"{v}\"{checked}> \
             <label for=\"m-{v}\">{label}</label></div>"
        ));
    }
    if with_exclusions {
        body.push_str(
            "<p class=\"hint\">This repository has mutability exclusion filters; saving a mutability here replaces them (none).</p>",
        );
    }
    body.push_str(&format!(
        "</fieldset><fieldset><legend>Scanning</legend>\
         <div class=\"choice\"><input type=\"checkbox\" id=\"scan\" name=\"scan_on_push\" value=\"on\"{}> \
         <label for=\"scan\">Scan images when they are pushed</label></div></fieldset>\
         <p class=\"hint\">Encryption is chosen when a repository is created and cannot be changed.</p>\
         <button type=\"submit\">Save settings</button></form>",
        if scan_on_push { " checked" } else { "" }
    ));
    Ok((body, false))
}

/// The lifecycle view: the editor (with `draft` and `error` after a
/// refused save) and the latest preview. (HTML, whether to refresh.)
async fn lifecycle(
    ctx: &Ctx,
    name: &str,
    draft: Option<&str>,
    error: Option<&str>,
) -> Result<(String, bool), PageError> {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&html::notice("error", &esc(e)));
    } else if ctx.param("saved").is_some() {
        body.push_str(&html::notice("ok", "Lifecycle policy saved."));
    } else if ctx.param("deleted").is_some() {
        body.push_str(&html::notice("ok", "Lifecycle policy deleted."));
    }
    let current = match ctx
        .ecr("GetLifecyclePolicy", json!({ "repositoryName": name }))
        .await
    {
        Ok(v) => Some(v),
        Err(e) if e.name == "LifecyclePolicyNotFoundException" => None,
        Err(e) => return Err(PageError::from_ecr(e)),
    };
    let stored = current
        .as_ref()
        .and_then(|v| v["lifecyclePolicyText"].as_str())
        .map(pretty);
    // The latest preview (its text fills the editor after a Preview).
    let mut pv = String::new();
    let mut previewed: Option<String> = None;
    let mut input = json!({ "repositoryName": name, "maxResults": PREVIEW_PER_PAGE });
    let pafter = ctx.optional("pafter", 4096)?;
    if !pafter.is_empty() {
        input["nextToken"] = json!(pafter);
    }
    let mut refresh = false;
    match ctx.ecr("GetLifecyclePolicyPreview", input).await {
        Err(e) if e.name == "LifecyclePolicyPreviewNotFoundException" => {
            pv.push_str("<p class=\"muted\">No preview yet: press Preview.</p>");
        }
        Err(e) if e.name == "AccessDeniedException" => {
            pv.push_str(&html::notice(
                "warn",
                &format!("Not authorized to see the preview: {}", esc(&e.message)),
            ));
        }
        Err(e) => return Err(PageError::from_ecr(e)),
        Ok(p) => {
            let status = p["status"].as_str().unwrap_or("");
            refresh = status == "IN_PROGRESS";
            let expiring = p["summary"]["expiringImageTotalCount"].as_u64();
            pv.push_str(&html::facts(&[
                ("Status", esc(status)),
                (
                    "Images that would expire",
                    expiring.map_or("—".into(), |n| n.to_string()),
                ),
            ]));
            if refresh {
                pv.push_str(&html::notice(
                    "info",
                    "The preview is being computed; this page reloads until it is done.",
                ));
            }
            let results = p["previewResults"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    let digest = r["imageDigest"].as_str().unwrap_or("");
                    vec![
                        tags_cell(r),
                        format!(
                            "<a href=\"{}\">{}</a>",
                            href("/console/image", &[("name", name), ("digest", digest)]),
                            html::short_digest(digest)
                        ),
                        html::time_el(r["imagePushedAt"].as_f64()),
                        esc(r["action"]["type"].as_str().unwrap_or("")),
                        r["appliedRulePriority"]
                            .as_i64()
                            .map_or(String::new(), |n| n.to_string()),
                    ]
                })
                .collect();
            if status == "COMPLETE" {
                pv.push_str(&html::table(
                    "Images the previewed policy would expire",
                    &["Tags", "Digest", "Pushed", "Action", "Rule"],
                    &rows,
                ));
                if let Some(t) = p["nextToken"].as_str() {
                    pv.push_str(&format!(
                        "<nav class=\"pager\" aria-label=\"Preview pages\"><a class=\"button\" rel=\"next\" href=\"{}#preview\">More results</a></nav>",
                        href(
                            "/console/repository",
                            &[("name", name), ("view", "lifecycle"), ("pafter", t)]
                        )
                    ));
                }
            }
            if let Some(text) = p["lifecyclePolicyText"].as_str() {
                previewed = Some(pretty(text));
                pv.push_str("<details><summary>The previewed policy</summary>");
                pv.push_str(&format!(
                    "<pre class=\"json\" tabindex=\"0\"><code>{}</code></pre></details>",
                    esc(&pretty(text))
                ));
            }
        }
    }
    let from_preview = previewed.filter(|_| ctx.param("previewing").is_some());
    let text = match (draft, from_preview, &stored) {
        (Some(d), _, _) => d.to_string(),
        (None, Some(p), _) => p,
        (None, None, Some(s)) => s.clone(),
        (None, None, None) => EXAMPLE_POLICY.to_string(),
    };
    let mut facts = vec![(
        "Policy",
        if stored.is_some() {
            "set".to_string()
        } else {
            "none (the editor holds an example)".to_string()
        },
    )];
    if let Some(t) = current.as_ref().and_then(|v| v["lastEvaluatedAt"].as_f64()) {
        facts.push(("Last evaluated", html::time_el(Some(t))));
    }
    body.push_str(&html::facts(&facts));
    body.push_str(&format!(
        "<form method=\"post\" action=\"/console/repository\">{}\
         <input type=\"hidden\" name=\"name\" value=\"{}\">\
         <label for=\"policy\">Lifecycle policy (JSON)</label>\
         <textarea id=\"policy\" name=\"policy\" rows=\"18\" maxlength=\"30720\" spellcheck=\"false\" aria-describedby=\"policy-hint\">{}</textarea>\
         <p class=\"hint\" id=\"policy-hint\">ECR's lifecycle policy: rules with a priority, a selection (tagStatus, tagPrefixList or tagPatternList, countType, countNumber) and the expire action. Preview shows what the text above would expire, without changing anything.</p>\
         <div class=\"toolbar\"><button type=\"submit\" name=\"action\" value=\"lifecycle-save\">Save policy</button>\
         <button type=\"submit\" name=\"action\" value=\"lifecycle-preview\" class=\"secondary\">Preview</button>{}</div></form>",
        html::csrf_field(&ctx.csrf),
        attr(name),
        esc(&text),
        if stored.is_some() {
            "<button type=\"submit\" name=\"action\" value=\"lifecycle-delete\" class=\"secondary\">Delete policy</button>"
        } else {
            ""
        }
    ));
    body.push_str("<h2 id=\"preview\">Preview</h2>");
    body.push_str(&pv);
    Ok((body, refresh))
}

/// A JSON text pretty-printed (as it was when it is not JSON).
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

async fn policy(ctx: &Ctx, name: &str) -> Result<(String, bool), PageError> {
    let mut body = String::new();
    match ctx
        .ecr("GetRepositoryPolicy", json!({ "repositoryName": name }))
        .await
    {
        Ok(v) => {
            let text = v["policyText"].as_str().unwrap_or("");
            let doc = serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into()));
            body.push_str(&html::json_block("Repository policy", &doc));
        }
        Err(e) if e.name == "RepositoryPolicyNotFoundException" => {
            body.push_str(
                "<p>This repository has no policy: only identity policies of its own account decide who may use it.</p>",
            );
        }
        Err(e) => return Err(PageError::from_ecr(e)),
    }
    Ok((body, false))
}

/// `POST /console/repository` (CSRF and origin already checked).
pub async fn post(ctx: &Ctx, form: &Form) -> PageResult {
    let name = form
        .get("name")
        .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
        .ok_or_else(|| PageError::Bad("The form names no repository".into()))?;
    let back = |view: &str, flag: &str| {
        let mut to = format!("/console/repository?name={}&view={view}", html::q(name));
        if !flag.is_empty() {
            to.push_str(&format!("&{flag}=1"));
        }
        to
    };
    match form.get("action").unwrap_or("") {
        "lifecycle-save" | "lifecycle-preview" => {
            let text = form.get("policy").unwrap_or("");
            let save = form.get("action") == Some("lifecycle-save");
            let (op, flag) = if save {
                ("PutLifecyclePolicy", "saved")
            } else {
                ("StartLifecyclePolicyPreview", "previewing")
            };
            let input = json!({ "repositoryName": name, "lifecyclePolicyText": text });
            match ctx.ecr(op, input).await {
                Ok(_) => Ok(super::redirect(&format!(
                    "{}#preview",
                    back("lifecycle", flag)
                ))),
                Err(e) if e.name == "AccessDeniedException" => Err(PageError::Denied(e.message)),
                Err(e) if e.status < 500 && !e.name.ends_with("NotFoundException") => {
                    // Refused as written: the editor again, with the text kept.
                    describe(ctx, name).await?;
                    let (body, _) = lifecycle(
                        ctx,
                        name,
                        Some(text),
                        Some(&format!("{}: {}", e.name, e.message)),
                    )
                    .await?;
                    let mut r = frame(ctx, name, "lifecycle", &body, None);
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    Ok(r)
                }
                Err(e) => Err(PageError::from_ecr(e)),
            }
        }
        "lifecycle-delete" => {
            ctx.call("DeleteLifecyclePolicy", json!({ "repositoryName": name }))
                .await?;
            Ok(super::redirect(&back("lifecycle", "deleted")))
        }
        "settings" => {
            let repo = describe(ctx, name).await?;
            let mutability = form.get("mutability").unwrap_or("");
            if !matches!(mutability, "MUTABLE" | "IMMUTABLE") {
                return Err(PageError::Bad(
                    "Tag mutability is MUTABLE or IMMUTABLE".into(),
                ));
            }
            let scan = match form.get("scan_on_push") {
                None => false,
                Some("on") => true,
                Some(_) => return Err(PageError::Bad("scan_on_push is on or absent".into())),
            };
            if repo["imageTagMutability"].as_str() != Some(mutability) {
                ctx.call(
                    "PutImageTagMutability",
                    json!({ "repositoryName": name, "imageTagMutability": mutability }),
                )
                .await?;
            }
            if repo["imageScanningConfiguration"]["scanOnPush"].as_bool() != Some(scan) {
                ctx.call(
                    "PutImageScanningConfiguration",
                    json!({ "repositoryName": name, "imageScanningConfiguration": { "scanOnPush": scan } }),
                )
                .await?;
            }
            Ok(super::redirect(&back("settings", "saved")))
        }
        other => Err(PageError::Bad(format!("Unknown action {other:?}"))),
    }
}
