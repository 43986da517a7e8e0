//! The registry page (`/console/registry`): the caller's registry's
//! policy (GetRegistryPolicy), scanning configuration
//! (GetRegistryScanningConfiguration), replication configuration
//! (DescribeRegistry) and replication status: per destination, what is
//! still to deliver and how far behind it is, drawn as a chart. No ECR
//! operation shows the backlog, so it is authorized explicitly as
//! `ecr:DescribeRegistry` (the operation that shows the configuration it
//! follows) and shows only what this registry pushed. Each section stands
//! alone: one the caller may not see says so, and the others still show.

use serde_json::{Value, json};

use super::html::{self, esc};
use super::{Ctx, PageError, PageResult};

/// `GET /console/registry`.
pub async fn show(ctx: &Ctx) -> PageResult {
    let account = ctx.session.caller.principal.account.clone();
    let mut body = html::facts(&[
        ("Registry ID", esc(&account)),
        ("Region", esc(&ctx.state.region)),
        (
            "Registry host",
            format!(
                "<code>{}</code>",
                esc(&ctx.state.registry_host_for(&account, ctx.host.as_deref()))
            ),
        ),
    ]);

    body.push_str("<h2>Replication status</h2>");
    body.push_str(&replication_status(ctx).await?);

    body.push_str("<h2>Replication configuration</h2>");
    body.push_str(
        &section(ctx, "DescribeRegistry", |v| {
            let rules = v["replicationConfiguration"]["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if rules.is_empty() {
                return "<p class=\"muted\">No replication rules: pushes stay here.</p>".into();
            }
            let rows: Vec<Vec<String>> = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let dests: Vec<String> = r["destinations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| {
                            format!(
                                "{} in {}",
                                esc(d["registryId"].as_str().unwrap_or("")),
                                esc(d["region"].as_str().unwrap_or(""))
                            )
                        })
                        .collect();
                    let filters: Vec<String> = r["repositoryFilters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| {
                            format!("<code>{}*</code>", esc(f["filter"].as_str().unwrap_or("")))
                        })
                        .collect();
                    vec![
                        (i + 1).to_string(),
                        dests.join("<br>"),
                        if filters.is_empty() {
                            "every repository".into()
                        } else {
                            filters.join(" ")
                        },
                    ]
                })
                .collect();
            html::table(
                "Replication rules",
                &["Rule", "Destinations", "Repositories"],
                &rows,
            )
        })
        .await?,
    );

    body.push_str("<h2>Scanning configuration</h2>");
    body.push_str(
        &section(ctx, "GetRegistryScanningConfiguration", |v| {
            let c = &v["scanningConfiguration"];
            let mut out =
                html::facts(&[("Scan type", esc(c["scanType"].as_str().unwrap_or("BASIC")))]);
            let rows: Vec<Vec<String>> = c["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let filters: Vec<String> = r["repositoryFilters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| {
                            format!("<code>{}</code>", esc(f["filter"].as_str().unwrap_or("")))
                        })
                        .collect();
                    vec![
                        esc(r["scanFrequency"].as_str().unwrap_or("")),
                        filters.join(" "),
                    ]
                })
                .collect();
            out.push_str(&html::table(
                "Registry scanning rules",
                &["Frequency", "Repository filters"],
                &rows,
            ));
            out
        })
        .await?,
    );

    body.push_str("<h2>Registry policy</h2>");
    body.push_str(&match ctx.ecr("GetRegistryPolicy", json!({})).await {
        Ok(v) => {
            let text = v["policyText"].as_str().unwrap_or("");
            let doc = serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into()));
            html::json_block("Registry policy", &doc)
        }
        Err(e) if e.name == "RegistryPolicyNotFoundException" => {
            "<p class=\"muted\">This registry has no policy.</p>".into()
        }
        Err(e) if e.name == "AccessDeniedException" => denied(&e.message),
        Err(e) => return Err(PageError::from_ecr(e)),
    });
    Ok(ctx.page("Registry", "registry", Vec::new(), &body))
}

fn denied(message: &str) -> String {
    html::notice(
        "warn",
        &format!("Not authorized to see this: {}", esc(message)),
    )
}

/// One section made of ECR operation `op` (no input): `render` of its
/// answer, or a "not authorized" note.
async fn section(
    ctx: &Ctx,
    op: &str,
    render: impl FnOnce(&Value) -> String,
) -> Result<String, PageError> {
    match ctx.ecr(op, json!({})).await {
        Ok(v) => Ok(render(&v)),
        Err(e) if e.name == "AccessDeniedException" => Ok(denied(&e.message)),
        Err(e) => Err(PageError::from_ecr(e)),
    }
}

async fn replication_status(ctx: &Ctx) -> Result<String, PageError> {
    match ctx.authorize("DescribeRegistry", None).await {
        Ok(()) => {}
        Err(PageError::Denied(m)) => return Ok(denied(&m)),
        Err(e) => return Err(e),
    }
    let backlogs = ctx
        .state
        .registry
        .replication_backlogs_from(&ctx.registry())
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?;
    if backlogs.is_empty() {
        return Ok("<p class=\"muted\">Nothing is replicated from this registry.</p>".into());
    }
    let now = crate::registry::now_millis();
    let lag = |b: &crate::registry::DestinationBacklog| {
        b.oldest_pending
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
    };
    let bars: Vec<(String, f64, String, &str)> = backlogs
        .iter()
        .map(|b| {
            let l = lag(b);
            let colour = if b.failing > 0 || b.failed > 0 {
                "#b42318"
            } else if l > 60.0 {
                "#b45309"
            } else {
                "#1a7f37"
            };
            (
                format!("{} {}", b.destination.region, b.destination.registry),
                l,
                if b.pending == 0 {
                    "caught up".into()
                } else {
                    html::duration(l)
                },
                colour,
            )
        })
        .collect();
    let mut out = html::bar_chart(
        "Replication lag per destination (age of the oldest undelivered push)",
        &bars,
    );
    let rows: Vec<Vec<String>> = backlogs
        .iter()
        .map(|b| {
            vec![
                esc(&b.destination.region),
                esc(&b.destination.registry),
                b.pending.to_string(),
                b.failing.to_string(),
                b.failed.to_string(),
                if b.pending == 0 {
                    "caught up".into()
                } else {
                    esc(&html::duration(lag(b)))
                },
                esc(b.last_failure.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    out.push_str(&html::table(
        "Replication backlog per destination",
        &[
            "Region",
            "Registry",
            "Pending",
            "Retrying",
            "Given up",
            "Lag",
            "Last failure",
        ],
        &rows,
    ));
    Ok(out)
}
