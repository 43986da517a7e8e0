//! An image's page (`/console/image?name=…&digest=…`): its details
//! (DescribeImages), its manifest pretty-printed with the platforms of an
//! index or the config and layers of an image (BatchGetImage), its scan
//! findings with filters by severity and package and a chart of the
//! severity counts (DescribeImageScanFindings), where it was replicated
//! (DescribeImageReplicationStatus), and its referrers — signatures, SBOMs,
//! attestations — as `/v2/<name>/referrers/<digest>` lists them, read from
//! the registry service and authorized as that API is (`ecr:BatchGetImage`).

use serde_json::{Value, json};

use super::html::{self, attr, esc, href};
use super::repository::{MAX_NAME, copy_command, scan_cell};
use super::{Ctx, PageError, PageResult};
use crate::reference::RepoName;
use crate::registry::RepoId;

/// Manifest media types the page asks BatchGetImage for.
const MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Findings shown per page (at least; every match of the last page read is
/// kept, so paging never skips one), and the pages of
/// DescribeImageScanFindings read to fill it: a filter that matches little
/// stops after 2,000 findings, with a link to read on.
const FINDINGS_SHOWN: usize = 200;
const FINDINGS_PAGES: usize = 20;
const FINDINGS_PER_CALL: u64 = 100;

/// One finding, from ECR's basic or enhanced shape.
struct Finding {
    id: String,
    severity: String,
    package: String,
    version: String,
    fixed: String,
    uri: String,
}

fn attribute(f: &Value, key: &str) -> String {
    f["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == key))
        .and_then(|x| x["value"].as_str())
        .unwrap_or("")
        .to_string()
}

fn findings_of(scan: &Value) -> Vec<Finding> {
    let f = &scan["imageScanFindings"];
    let mut out = Vec::new();
    for b in f["findings"].as_array().into_iter().flatten() {
        out.push(Finding {
            id: b["name"].as_str().unwrap_or("").into(),
            severity: b["severity"].as_str().unwrap_or("UNDEFINED").into(),
            package: attribute(b, "package_name"),
            version: attribute(b, "package_version"),
            fixed: attribute(b, "fixed_version"),
            uri: b["uri"].as_str().unwrap_or("").into(),
        });
    }
    for e in f["enhancedFindings"].as_array().into_iter().flatten() {
        let d = &e["packageVulnerabilityDetails"];
        let p = &d["vulnerablePackages"][0];
        out.push(Finding {
            id: d["vulnerabilityId"].as_str().unwrap_or("").into(),
            severity: e["severity"].as_str().unwrap_or("UNDEFINED").into(),
            package: p["name"].as_str().unwrap_or("").into(),
            version: p["version"].as_str().unwrap_or("").into(),
            fixed: p["fixedInVersion"].as_str().unwrap_or("").into(),
            uri: d["sourceUrl"].as_str().unwrap_or("").into(),
        });
    }
    out
}

/// A link only when it is http(s): a finding's URI comes from vulnerability
/// data, and a `javascript:` URI must not become a link.
fn safe_link(uri: &str, text: &str) -> String {
    if uri.starts_with("https://") || uri.starts_with("http://") {
        format!(
            "<a href=\"{}\" rel=\"noreferrer noopener\">{}</a>",
            attr(uri),
            esc(text)
        )
    } else {
        esc(text)
    }
}

/// `GET /console/image`.
pub async fn show(ctx: &Ctx) -> PageResult {
    let name = ctx.required("name", MAX_NAME)?;
    let digest = ctx.required("digest", 200)?;
    let id = json!({ "imageDigest": digest });
    let described = ctx
        .call(
            "DescribeImages",
            json!({ "repositoryName": name, "imageIds": [id] }),
        )
        .await?;
    let detail = described["imageDetails"]
        .get(0)
        .cloned()
        .ok_or_else(|| PageError::NotFound(format!("No image {digest} in {name}")))?;
    let got = ctx
        .call(
            "BatchGetImage",
            json!({ "repositoryName": name, "imageIds": [id], "acceptedMediaTypes": MEDIA_TYPES }),
        )
        .await?;
    let Some(image) = got["images"].get(0) else {
        let why = got["failures"][0]["failureReason"]
            .as_str()
            .unwrap_or("the image could not be read");
        return Err(PageError::NotFound(why.to_string()));
    };
    let manifest_text = image["imageManifest"].as_str().unwrap_or("");
    let media_type = image["imageManifestMediaType"].as_str().unwrap_or("");
    let manifest: Value = serde_json::from_str(manifest_text).unwrap_or(Value::Null);

    let mut body = String::new();
    let host = ctx
        .state
        .registry_host_for(&ctx.session.caller.principal.account, ctx.host.as_deref());
    body.push_str(&copy_command(
        "pull-cmd",
        "Pull",
        &format!("docker pull {host}/{name}@{digest}"),
    ));
    let tags: Vec<String> = detail["imageTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|t| format!("<span class=\"tag\">{}</span>", esc(t)))
        .collect();
    body.push_str(&html::facts(&[
        (
            "Tags",
            if tags.is_empty() {
                "<span class=\"muted\">untagged</span>".into()
            } else {
                tags.join("")
            },
        ),
        ("Digest", format!("<code>{}</code>", esc(digest))),
        ("Media type", format!("<code>{}</code>", esc(media_type))),
        (
            "Size",
            esc(&html::bytes(
                detail["imageSizeInBytes"].as_i64().unwrap_or(0),
            )),
        ),
        ("Pushed", html::time_el(detail["imagePushedAt"].as_f64())),
        (
            "Last pulled",
            html::time_el(detail["lastRecordedPullTime"].as_f64()),
        ),
        ("Scan", scan_cell(&detail)),
    ]));

    let is_index = manifest["manifests"].is_array();
    if is_index {
        body.push_str("<h2>Platforms</h2>");
        let rows: Vec<Vec<String>> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let p = &m["platform"];
                let platform = [
                    p["os"].as_str(),
                    p["architecture"].as_str(),
                    p["variant"].as_str(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
                let d = m["digest"].as_str().unwrap_or("");
                vec![
                    if platform.is_empty() {
                        "<span class=\"muted\">unknown</span>".into()
                    } else {
                        esc(&platform)
                    },
                    format!(
                        "<a href=\"{}\">{}</a>",
                        href("/console/image", &[("name", name), ("digest", d)]),
                        html::short_digest(d)
                    ),
                    esc(&html::bytes(m["size"].as_i64().unwrap_or(0))),
                    format!(
                        "<code>{}</code>",
                        esc(m["mediaType"].as_str().unwrap_or(""))
                    ),
                ]
            })
            .collect();
        body.push_str(&html::table(
            "Platforms of this index",
            &["Platform", "Manifest", "Manifest size", "Media type"],
            &rows,
        ));
    } else {
        body.push_str("<h2>Layers</h2>");
        let mut total = 0i64;
        let mut rows: Vec<Vec<String>> = Vec::new();
        for (i, l) in manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let size = l["size"].as_i64().unwrap_or(0);
            total += size;
            rows.push(vec![
                (i + 1).to_string(),
                html::short_digest(l["digest"].as_str().unwrap_or("")),
                esc(&html::bytes(size)),
                format!(
                    "<code>{}</code>",
                    esc(l["mediaType"].as_str().unwrap_or(""))
                ),
            ]);
        }
        body.push_str(&html::table(
            &format!("Layers ({} compressed)", html::bytes(total)),
            &["#", "Digest", "Size", "Media type"],
            &rows,
        ));
        if let Some(c) = manifest["config"].as_object() {
            body.push_str(&html::facts(&[
                (
                    "Config",
                    html::short_digest(c.get("digest").and_then(Value::as_str).unwrap_or("")),
                ),
                (
                    "Config type",
                    format!(
                        "<code>{}</code>",
                        esc(c.get("mediaType").and_then(Value::as_str).unwrap_or(""))
                    ),
                ),
            ]));
        }
    }

    body.push_str("<h2 id=\"findings\">Vulnerabilities</h2>");
    body.push_str(&findings(ctx, name, digest).await?);
    body.push_str("<h2>Referrers</h2>");
    body.push_str(&referrers(ctx, name, digest).await?);
    body.push_str("<h2>Replication</h2>");
    body.push_str(&replication(ctx, name, digest).await?);
    body.push_str("<h2>Manifest</h2>");
    body.push_str(&html::json_block("Manifest", &manifest));

    let short = match digest.split_once(':') {
        Some((_, hex)) if hex.len() > 12 => &hex[..12],
        _ => digest,
    };
    Ok(ctx.page(
        &format!("{name}@{short}"),
        "repositories",
        vec![
            ("Repositories".into(), "/console/".into()),
            (
                name.to_string(),
                format!("/console/repository?name={}", html::q(name)),
            ),
        ],
        &body,
    ))
}

async fn findings(ctx: &Ctx, name: &str, digest: &str) -> Result<String, PageError> {
    let severity = ctx.optional("severity", 16)?;
    if !severity.is_empty() && !html::SEVERITIES.iter().any(|(s, _)| *s == severity) {
        return Err(PageError::Bad(format!("Unknown severity {severity:?}")));
    }
    let package = ctx.optional("package", 128)?.trim().to_ascii_lowercase();
    let mut token = ctx.optional("fafter", 4096)?.to_string();
    let mut shown: Vec<Finding> = Vec::new();
    let mut counts = Value::Null;
    let mut status = String::new();
    let mut more: Option<String> = None;
    for _ in 0..FINDINGS_PAGES {
        let mut input = json!({
            "repositoryName": name,
            "imageId": { "imageDigest": digest },
            "maxResults": FINDINGS_PER_CALL,
        });
        if !token.is_empty() {
            input["nextToken"] = json!(token);
        }
        let scan = match ctx.ecr("DescribeImageScanFindings", input).await {
            Ok(v) => v,
            Err(e) if e.name == "ScanNotFoundException" => {
                return Ok("<p class=\"muted\">This image has not been scanned.</p>".into());
            }
            Err(e) if e.name == "AccessDeniedException" => {
                return Ok(html::notice(
                    "warn",
                    &format!("Not authorized to see the findings: {}", esc(&e.message)),
                ));
            }
            Err(e) => return Err(PageError::from_ecr(e)),
        };
        status = scan["imageScanStatus"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if counts.is_null() {
            counts = scan["imageScanFindings"]["findingSeverityCounts"].clone();
        }
        shown.extend(findings_of(&scan).into_iter().filter(|f| {
            (severity.is_empty() || f.severity == severity)
                && (package.is_empty() || f.package.to_ascii_lowercase().contains(&package))
        }));
        match scan["nextToken"].as_str() {
            None => {
                more = None;
                break;
            }
            Some(t) => {
                token = t.to_string();
                more = Some(token.clone());
                if shown.len() >= FINDINGS_SHOWN {
                    break;
                }
            }
        }
    }
    let mut out = String::new();
    if status != "COMPLETE" {
        out.push_str(&format!(
            "<p>Scan status: <strong>{}</strong></p>",
            esc(&status)
        ));
        return Ok(out);
    }
    let bars: Vec<(String, f64, String, &str)> = html::SEVERITIES
        .iter()
        .map(|(s, colour)| {
            let n = counts[*s].as_u64().unwrap_or(0);
            (s.to_string(), n as f64, n.to_string(), *colour)
        })
        .collect();
    out.push_str(&html::bar_chart("Findings by severity", &bars));
    out.push_str(&format!(
        "<form class=\"toolbar\" method=\"get\" action=\"/console/image#findings\" role=\"search\">\
         <input type=\"hidden\" name=\"name\" value=\"{}\"><input type=\"hidden\" name=\"digest\" value=\"{}\">\
         <div><label for=\"severity\">Severity</label><select id=\"severity\" name=\"severity\"><option value=\"\">Any</option>",
        attr(name),
        attr(digest)
    ));
    for (s, _) in html::SEVERITIES {
        let sel = if *s == severity { " selected" } else { "" };
        out.push_str(&format!("<option{sel}>{s}</option>"));
    }
    out.push_str(&format!(
        "</select></div><div><label for=\"package\">Package</label>\
         <input id=\"package\" name=\"package\" maxlength=\"128\" value=\"{}\" placeholder=\"name contains\"></div>\
         <div><button type=\"submit\">Filter</button></div></form>",
        attr(&package)
    ));
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|f| {
            vec![
                safe_link(&f.uri, &f.id),
                format!("<span class=\"sev sev-{0}\">{0}</span>", esc(&f.severity)),
                esc(&f.package),
                format!("<code>{}</code>", esc(&f.version)),
                if f.fixed.is_empty() {
                    "<span class=\"muted\">no fix</span>".into()
                } else {
                    format!("<code>{}</code>", esc(&f.fixed))
                },
            ]
        })
        .collect();
    out.push_str(&html::table(
        "Findings",
        &[
            "Vulnerability",
            "Severity",
            "Package",
            "Installed",
            "Fixed in",
        ],
        &rows,
    ));
    if let Some(t) = more {
        out.push_str(&format!(
            "<nav class=\"pager\" aria-label=\"Finding pages\"><a class=\"button\" rel=\"next\" href=\"{}#findings\">More findings</a></nav>",
            href(
                "/console/image",
                &[
                    ("name", name),
                    ("digest", digest),
                    ("severity", severity),
                    ("package", &package),
                    ("fafter", &t)
                ]
            )
        ));
    }
    Ok(out)
}

async fn referrers(ctx: &Ctx, name: &str, digest: &str) -> Result<String, PageError> {
    // What `/v2/<name>/referrers/<digest>` needs: ecr:BatchGetImage.
    match ctx.authorize("BatchGetImage", Some(name)).await {
        Ok(()) => {}
        Err(PageError::Denied(m)) => {
            return Ok(html::notice(
                "warn",
                &format!("Not authorized to see the referrers: {}", esc(&m)),
            ));
        }
        Err(e) => return Err(e),
    }
    let (Some(repo_name), Ok(subject)) = (
        RepoName::parse(name),
        digest.parse::<crate::digest::Digest>(),
    ) else {
        return Err(PageError::Bad("Not a repository name and digest".into()));
    };
    let repo = RepoId::new(&ctx.registry(), repo_name);
    let rows = ctx
        .state
        .registry
        .referrers(&repo, &subject, None)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let annotations: Value = r
                .annotations
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or(Value::Null);
            let created = annotations["org.opencontainers.image.created"]
                .as_str()
                .unwrap_or("");
            vec![
                format!(
                    "<code>{}</code>",
                    esc(r.artifact_type.as_deref().unwrap_or(&r.media_type))
                ),
                format!(
                    "<a href=\"{}\">{}</a>",
                    href("/console/image", &[("name", name), ("digest", &r.digest)]),
                    html::short_digest(&r.digest)
                ),
                esc(&html::bytes(r.size)),
                esc(created),
            ]
        })
        .collect();
    Ok(html::table(
        "Signatures, SBOMs and other artifacts that refer to this image",
        &["Artifact type", "Digest", "Size", "Created"],
        &rows,
    ))
}

async fn replication(ctx: &Ctx, name: &str, digest: &str) -> Result<String, PageError> {
    let out = match ctx
        .ecr(
            "DescribeImageReplicationStatus",
            json!({ "repositoryName": name, "imageId": { "imageDigest": digest } }),
        )
        .await
    {
        Ok(v) => v,
        Err(e) if e.name == "AccessDeniedException" => {
            return Ok(html::notice(
                "warn",
                &format!(
                    "Not authorized to see the replication status: {}",
                    esc(&e.message)
                ),
            ));
        }
        Err(e) => return Err(PageError::from_ecr(e)),
    };
    let rows: Vec<Vec<String>> = out["replicationStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                esc(s["region"].as_str().unwrap_or("")),
                esc(s["registryId"].as_str().unwrap_or("")),
                esc(s["status"].as_str().unwrap_or("")),
                esc(s["failureCode"].as_str().unwrap_or("")),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok("<p class=\"muted\">Not replicated anywhere.</p>".into());
    }
    Ok(html::table(
        "Replication of this image",
        &["Region", "Registry", "Status", "Failure"],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_links_are_http_only() {
        assert!(
            safe_link("https://osv.dev/CVE-1", "CVE-1")
                .starts_with("<a href=\"https://osv.dev/CVE-1\"")
        );
        assert_eq!(safe_link("javascript:alert(1)", "x<"), "x&lt;");
        assert_eq!(safe_link("", "CVE-2"), "CVE-2");
    }

    #[test]
    fn both_finding_shapes_are_read() {
        let basic = json!({ "imageScanFindings": { "findings": [{
            "name": "CVE-1", "severity": "HIGH", "uri": "https://x",
            "attributes": [{"key": "package_name", "value": "openssl"},
                           {"key": "package_version", "value": "1.0"},
                           {"key": "fixed_version", "value": "1.1"}]
        }]}});
        let f = findings_of(&basic);
        assert_eq!(
            (f[0].id.as_str(), f[0].package.as_str(), f[0].fixed.as_str()),
            ("CVE-1", "openssl", "1.1")
        );
        let enhanced = json!({ "imageScanFindings": { "enhancedFindings": [{
            "severity": "LOW",
            "packageVulnerabilityDetails": { "vulnerabilityId": "CVE-2", "sourceUrl": "https://y",
                "vulnerablePackages": [{"name": "zlib", "version": "1.2"}] }
        }]}});
        let f = findings_of(&enhanced);
        assert_eq!(
            (
                f[0].id.as_str(),
                f[0].package.as_str(),
                f[0].severity.as_str()
            ),
            ("CVE-2", "zlib", "LOW")
        );
    }
}
