//! The repositories page: the caller's registry's repositories, searched
//! by part of their name, sorted by name or creation time, a page at a
//! time. The search runs in the registry's index (`Registry::
//! search_repositories`, one index range per page); each row is kept only
//! when the caller may `ecr:DescribeRepositories` it (the rule
//! DescribeRepositories applies to its listing), and the page's rows are
//! then described by DescribeRepositories itself, as the caller. A page
//! reads at most [`SCAN_BUDGET`] rows: a caller who sees few repositories
//! of many gets a "continue" link instead of a slow page. The cursor is a
//! sealed token, so names the caller may not see never appear in a link.

use serde_json::{Value, json};

use super::html::{self, attr, esc, href};
use super::{Ctx, PageError, PageResult};
use crate::registry::{RepoCursor, RepoOrder};

/// Repositories read (before authorization) for one page at most.
const SCAN_BUDGET: usize = 5000;
/// Page sizes offered; the first is the default.
const PAGE_SIZES: &[usize] = &[50, 25, 100];
/// The longest search string (a repository name's longest).
const MAX_SEARCH: usize = 256;

fn order_of(s: &str) -> Result<RepoOrder, PageError> {
    Ok(match s {
        "" | "name" => RepoOrder::NameAsc,
        "-name" => RepoOrder::NameDesc,
        "created" => RepoOrder::CreatedAsc,
        "-created" => RepoOrder::CreatedDesc,
        other => {
            return Err(PageError::Bad(format!(
                "Unknown sort {other:?}: name, -name, created or -created"
            )));
        }
    })
}

/// `GET /console/`.
pub async fn list(ctx: &Ctx) -> PageResult {
    let search = ctx.optional("q", MAX_SEARCH)?.trim().to_ascii_lowercase();
    let sort = ctx.optional("sort", 16)?;
    let order = order_of(sort)?;
    let size = match ctx.optional("n", 4)? {
        "" => PAGE_SIZES[0],
        n => n
            .parse::<usize>()
            .ok()
            .filter(|n| PAGE_SIZES.contains(n))
            .ok_or_else(|| PageError::Bad("Page size is 25, 50 or 100".into()))?,
    };
    let registry = ctx.registry();
    let scope = format!("repositories\n{registry}\n{sort}\n{search}");
    let mut cursor = match ctx.optional("after", 2048)? {
        "" => None,
        t => {
            let c = ctx.open(&scope, t)?;
            let (at, name) = c
                .split_once('\n')
                .ok_or_else(|| PageError::Bad("The page link is invalid".into()))?;
            Some(RepoCursor {
                created_at: at.parse().unwrap_or(0),
                name: name.to_string(),
            })
        }
    };
    let reg = &ctx.state.registry;
    let access = &ctx.state.access;
    let mut names: Vec<String> = Vec::new();
    let mut scanned = 0usize;
    let mut more = false;
    let mut budget_spent = false;
    'scan: loop {
        let batch = ((size + 1) as i64).clamp(100, 1000);
        let rows = reg
            .search_repositories(&registry, &search, order, cursor.as_ref(), batch)
            .await
            .map_err(|e| PageError::Internal(e.to_string()))?;
        let exhausted = (rows.len() as i64) < batch;
        for r in &rows {
            if names.len() == size {
                more = true;
                break 'scan;
            }
            scanned += 1;
            access.prime_policy(&registry, &r.name, r.policy.as_deref());
            let allowed = access
                .authorize(
                    &ctx.session.caller,
                    "ecr:DescribeRepositories",
                    &registry,
                    Some(&r.name),
                    ctx.ip,
                )
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?;
            if allowed {
                names.push(r.name.clone());
            }
            cursor = Some(RepoCursor {
                created_at: r.created_at,
                name: r.name.clone(),
            });
            if scanned >= SCAN_BUDGET {
                let last_of_all = exhausted && rows.last().is_some_and(|l| l.name == r.name);
                more = !last_of_all;
                budget_spent = more;
                break 'scan;
            }
        }
        if exhausted {
            break;
        }
    }
    // The page's rows as DescribeRepositories describes them to this caller.
    let mut repos: Vec<Value> = Vec::new();
    for chunk in names.chunks(100) {
        let out = ctx
            .call("DescribeRepositories", json!({ "repositoryNames": chunk }))
            .await?;
        repos.extend(out["repositories"].as_array().cloned().unwrap_or_default());
    }
    // The next page starts after the last row read: rows read after the
    // last one shown were not the caller's to see.
    let next = match (&cursor, more) {
        (Some(c), true) => Some(ctx.seal(&scope, &format!("{}\n{}", c.created_at, c.name))),
        _ => None,
    };

    let mut body = String::new();
    body.push_str("<form class=\"toolbar\" method=\"get\" action=\"/console/\" role=\"search\">");
    body.push_str(&format!(
        "<div><label for=\"q\">Search repositories</label>\
         <input id=\"q\" name=\"q\" type=\"search\" maxlength=\"{MAX_SEARCH}\" value=\"{}\" placeholder=\"part of a name\"></div>",
        attr(&search)
    ));
    body.push_str("<div><label for=\"sort\">Sort by</label><select id=\"sort\" name=\"sort\">");
    for (v, label) in [
        ("name", "Name (A–Z)"),
        ("-name", "Name (Z–A)"),
        ("-created", "Newest first"),
        ("created", "Oldest first"),
    ] {
        let sel = if v == sort || (sort.is_empty() && v == "name") {
            " selected"
        } else {
            ""
        };
        body.push_str(&format!("<option value=\"{v}\"{sel}>{label}</option>"));
    }
    body.push_str(
        "</select></div><div><label for=\"n\">Per page</label><select id=\"n\" name=\"n\">",
    );
    for n in [25, 50, 100] {
        let sel = if n == size { " selected" } else { "" };
        body.push_str(&format!("<option{sel}>{n}</option>"));
    }
    body.push_str("</select></div><div><button type=\"submit\">Search</button></div></form>");

    let rows: Vec<Vec<String>> = repos
        .iter()
        .map(|r| {
            let name = r["repositoryName"].as_str().unwrap_or("");
            let scan = if r["imageScanningConfiguration"]["scanOnPush"].as_bool() == Some(true) {
                "on push"
            } else {
                "manual"
            };
            vec![
                format!(
                    "<a href=\"{}\">{}</a>",
                    href("/console/repository", &[("name", name)]),
                    esc(name)
                ),
                format!(
                    "<code>{}</code>",
                    esc(r["repositoryUri"].as_str().unwrap_or(""))
                ),
                esc(r["imageTagMutability"].as_str().unwrap_or("")),
                esc(scan),
                esc(r["encryptionConfiguration"]["encryptionType"]
                    .as_str()
                    .unwrap_or("")),
                html::time_el(r["createdAt"].as_f64()),
            ]
        })
        .collect();
    let caption = if search.is_empty() {
        "Repositories".to_string()
    } else {
        format!("Repositories whose name contains “{search}”")
    };
    body.push_str(&html::table(
        &caption,
        &[
            "Name",
            "URI",
            "Tag mutability",
            "Scanning",
            "Encryption",
            "Created",
        ],
        &rows,
    ));
    if repos.is_empty() && !more {
        body.push_str(&html::notice(
            "info",
            "No repositories here that you are allowed to see.",
        ));
    }
    if budget_spent && repos.len() < size {
        body.push_str(&html::notice(
            "info",
            &format!("Searched {scanned} repositories for this page; continue to search the rest."),
        ));
    }
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    let n = size.to_string();
    let mut base: Vec<(&str, &str)> = vec![("q", &search), ("sort", sort)];
    if size != PAGE_SIZES[0] {
        base.push(("n", &n));
    }
    if ctx.param("after").is_some() {
        body.push_str(&format!(
            "<a class=\"button secondary\" href=\"{}\">First page</a>",
            href("/console/", &base)
        ));
    }
    if let Some(t) = &next {
        let mut pairs = base.clone();
        pairs.push(("after", t));
        let label = if budget_spent && repos.len() < size {
            "Continue search"
        } else {
            "Next page"
        };
        body.push_str(&format!(
            "<a class=\"button\" rel=\"next\" href=\"{}\">{label}</a>",
            href("/console/", &pairs)
        ));
    }
    body.push_str("</nav>");
    Ok(ctx.page("Repositories", "repositories", Vec::new(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_are_named() {
        assert_eq!(order_of("").unwrap(), RepoOrder::NameAsc);
        assert_eq!(order_of("-created").unwrap(), RepoOrder::CreatedDesc);
        assert!(order_of("size").is_err());
    }
}
