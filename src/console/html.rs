//! The console's HTML: escaping (every value that reaches a page goes
//! through [`esc`] or [`attr`]), the page frame (header, navigation, main
//! landmark, sign-out form), tables, numbers and times as people read them,
//! and the charts, drawn as inline SVG on the server (no script draws them).

use std::fmt::Write;

/// `s` escaped for HTML text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped for an attribute value (the same rules as text: values are
/// always double-quoted).
pub fn attr(s: &str) -> String {
    esc(s)
}

/// `s` as one query-string value (percent-encoded).
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A link's target, `path` with its query pairs, escaped for an attribute.
pub fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut u = path.to_string();
    let mut first = true;
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        u.push(if first { '?' } else { '&' });
        first = false;
        u.push_str(k);
        u.push('=');
        u.push_str(&q(v));
    }
    attr(&u)
}

/// Bytes as people read them (binary units, one decimal).
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Epoch seconds (as ECR puts them on the wire) as UTC `YYYY-MM-DD HH:MM`.
pub fn time_secs(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2024-05-01T12:34:56Z → 2024-05-01 12:34 UTC
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// A `<time>` element for epoch seconds, machine-readable too.
pub fn time_el(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
            format!(
                "<time datetime=\"{}\">{}</time>",
                humantime::format_rfc3339_seconds(t),
                esc(&time_secs(s))
            )
        }
        _ => "<span class=\"muted\">never</span>".into(),
    }
}

/// A duration in seconds as people read it (`42 s`, `3 min`, `2.5 h`).
pub fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86400.0)
    }
}

/// A digest shortened for display (`sha256:` and 12 hex digits); the full
/// digest stays in its `title`.
pub fn short_digest(d: &str) -> String {
    let short = match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => d.to_string(),
    };
    format!(
        "<code class=\"digest\" title=\"{}\">{}</code>",
        attr(d),
        esc(&short)
    )
}

/// What a page needs to draw its frame.
pub struct Frame<'a> {
    pub title: &'a str,
    /// Which navigation entry is current (`repositories`, `registry`, `audit`).
    pub section: &'a str,
    /// Who is signed in (an ARN), and the CSRF token of the sign-out form.
    pub who: Option<(&'a str, &'a str)>,
    /// Breadcrumbs before the title: (label, link).
    pub crumbs: Vec<(String, String)>,
    /// Load this URL (a path; the page itself, without a fragment: a
    /// refresh to a fragment of the same page would not reload it) after
    /// two seconds: a preview being computed.
    pub refresh: Option<String>,
}

/// A whole page: `body` (already HTML) inside the frame.
pub fn page(f: &Frame, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(h, "<title>{} · Berth</title>", esc(f.title));
    if let Some(url) = &f.refresh {
        let _ = write!(
            h,
            "<meta http-equiv=\"refresh\" content=\"2; url={}\">",
            attr(url)
        );
    }
    h.push_str("<link rel=\"stylesheet\" href=\"/console/static/console.css\">");
    h.push_str("<script src=\"/console/static/console.js\" defer></script></head><body>");
    h.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a>");
    h.push_str("<header class=\"top\"><a class=\"brand\" href=\"/console/\">Berth</a>");
    if let Some((who, csrf)) = f.who {
        h.push_str("<nav aria-label=\"Main\"><ul>");
        for (id, label, link) in [
            ("repositories", "Repositories", "/console/"),
            ("registry", "Registry", "/console/registry"),
            ("audit", "Audit log", "/console/audit"),
        ] {
            let current = if id == f.section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(h, "<li><a href=\"{link}\"{current}>{label}</a></li>");
        }
        h.push_str("</ul></nav>");
        let _ = write!(
            h,
            "<form class=\"signout\" method=\"post\" action=\"/console/sign-out\">\
             <span class=\"who\" title=\"{}\">{}</span>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            attr(who),
            esc(who.rsplit([':', '/']).next().unwrap_or(who)),
            attr(csrf)
        );
    }
    h.push_str("</header><main id=\"main\">");
    if !f.crumbs.is_empty() {
        h.push_str("<nav aria-label=\"Breadcrumb\" class=\"crumbs\"><ol>");
        for (label, link) in &f.crumbs {
            let _ = write!(h, "<li><a href=\"{}\">{}</a></li>", attr(link), esc(label));
        }
        let _ = write!(
            h,
            "<li aria-current=\"page\">{}</li></ol></nav>",
            esc(f.title)
        );
    }
    let _ = write!(h, "<h1>{}</h1>", esc(f.title));
    h.push_str(body);
    h.push_str("</main></body></html>\n");
    h
}

/// A table: a caption (for screen readers; shown), header cells, and rows of
/// cells that are already HTML. Wide tables scroll inside their box on a phone.
pub fn table(caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<div class=\"table-wrap stack\" role=\"region\" aria-label=\"{}\" tabindex=\"0\"><table><caption>{}</caption><thead><tr>",
        attr(caption),
        esc(caption)
    );
    for c in headers {
        let _ = write!(h, "<th scope=\"col\">{}</th>", esc(c));
    }
    h.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            h,
            "<tr><td colspan=\"{}\" class=\"muted\">Nothing to show.</td></tr>",
            headers.len().max(1)
        );
    }
    for r in rows {
        h.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let label = headers.get(i).copied().unwrap_or("");
            let _ = write!(h, "<td data-label=\"{}\">{c}</td>", attr(label));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

/// A definition list of (term, HTML value).
pub fn facts(items: &[(&str, String)]) -> String {
    let mut h = String::from("<dl class=\"facts\">");
    for (k, v) in items {
        let _ = write!(h, "<div><dt>{}</dt><dd>{v}</dd></div>", esc(k));
    }
    h.push_str("</dl>");
    h
}

/// A JSON document, pretty-printed and escaped, in a `<pre>`.
pub fn json_block(label: &str, v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    format!(
        "<pre class=\"json\" tabindex=\"0\" aria-label=\"{}\"><code>{}</code></pre>",
        attr(label),
        esc(&text)
    )
}

/// A notice box: `kind` is `info`, `ok`, `warn` or `error`.
pub fn notice(kind: &str, html: &str) -> String {
    let role = if kind == "error" { "alert" } else { "status" };
    format!("<div class=\"notice {kind}\" role=\"{role}\">{html}</div>")
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        attr(csrf)
    )
}

/// Severity order and colours (ECR's severities).
pub const SEVERITIES: &[(&str, &str)] = &[
    ("CRITICAL", "#7f1d1d"),
    ("HIGH", "#c2410c"),
    ("MEDIUM", "#b45309"),
    ("LOW", "#3f6212"),
    ("INFORMATIONAL", "#1e40af"),
    ("UNDEFINED", "#52525b"),
];

/// A horizontal bar chart (one bar per label), with a text equivalent:
/// the SVG has a title and each bar's value is written beside it.
pub fn bar_chart(title: &str, bars: &[(String, f64, String, &str)]) -> String {
    // (label, value, value as text, colour)
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max).max(1e-9);
    let row = 28.0;
    // Room for the longest label (12px text, about 7px a character).
    let longest = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(0);
    let label_w = (longest as f64 * 7.2 + 14.0).clamp(80.0, 260.0);
    let width = 370.0 + label_w;
    let bar_w = width - label_w - 90.0;
    let height = row * bars.len().max(1) as f64 + 8.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure class=\"chart\"><svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-labelledby=\"t-{id}\" preserveAspectRatio=\"xMinYMin meet\"><title id=\"t-{id}\">{t}</title>",
        id = chart_id(title),
        t = esc(title)
    );
    for (i, (label, value, text, colour)) in bars.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = if *value > 0.0 {
            (value / max * bar_w).max(2.0)
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" class=\"lbl\">{l}</text>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{c}\" rx=\"2\"></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\" class=\"val\">{v}</text>",
            tx = label_w - 8.0,
            ty = y + 15.0,
            l = esc(label),
            x = label_w,
            h = row - 8.0,
            c = attr(colour),
            vx = label_w + w + 6.0,
            v = esc(text),
        );
    }
    let _ = write!(s, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    s
}

/// An area chart of values over days (epoch day, value), cumulative or not,
/// with the first and last dates and the largest value labelled.
pub fn area_chart(title: &str, points: &[(i64, f64)], fmt: &dyn Fn(f64) -> String) -> String {
    let (w, h, pad_l, pad_b) = (560.0, 180.0, 70.0, 24.0);
    let mut s = String::new();
    let id = chart_id(title);
    let _ = write!(
        s,
        "<figure class=\"chart\"><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"t-{id}\" preserveAspectRatio=\"xMinYMin meet\"><title id=\"t-{id}\">{}</title>",
        esc(title)
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"lbl\">No data</text>",
            w / 2.0 - 30.0,
            h / 2.0
        );
    } else {
        let d0 = points[0].0 as f64;
        let d1 = (points[points.len() - 1].0 as f64).max(d0 + 1.0);
        let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
        let x = |d: f64| pad_l + (d - d0) / (d1 - d0) * (w - pad_l - 10.0);
        let y = |v: f64| 10.0 + (1.0 - v / max) * (h - pad_b - 10.0);
        let mut path = format!("M{:.1},{:.1}", x(d0), y(0.0));
        let mut prev = 0.0;
        for (d, v) in points {
            // Steps: the value holds until the next day with a change.
            let _ = write!(path, " L{:.1},{:.1}", x(*d as f64), y(prev));
            let _ = write!(path, " L{:.1},{:.1}", x(*d as f64), y(*v));
            prev = *v;
        }
        let _ = write!(
            path,
            " L{:.1},{:.1} L{:.1},{:.1} Z",
            x(d1),
            y(prev),
            x(d1),
            y(0.0)
        );
        let _ = write!(
            s,
            "<line x1=\"{pad_l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"></line>\
             <line x1=\"{pad_l}\" y1=\"10\" x2=\"{pad_l}\" y2=\"{b}\" class=\"axis\"></line>\
             <path d=\"{path}\" class=\"area\"></path>\
             <text x=\"{tl}\" y=\"16\" text-anchor=\"end\" class=\"lbl\">{top}</text>\
             <text x=\"{tl}\" y=\"{b}\" text-anchor=\"end\" class=\"lbl\">0</text>\
             <text x=\"{pad_l}\" y=\"{dy}\" class=\"lbl\">{first}</text>\
             <text x=\"{r}\" y=\"{dy}\" text-anchor=\"end\" class=\"lbl\">{last}</text>",
            b = h - pad_b,
            r = w - 10.0,
            tl = pad_l - 6.0,
            top = esc(&fmt(max)),
            dy = h - 6.0,
            first = esc(&day(points[0].0)),
            last = esc(&day(points[points.len() - 1].0)),
        );
    }
    let _ = write!(s, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    s
}

/// An epoch day as `YYYY-MM-DD`.
pub fn day(epoch_day: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs((epoch_day.max(0) * 86400) as u64);
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
}

fn chart_id(title: &str) -> String {
    title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(esc("plain/name-1.0"), "plain/name-1.0");
        // Nothing a value holds can close an attribute or open a tag.
        let a = attr("\" onmouseover=\"x");
        assert!(!a.contains('"'));
        let h = href("/console/repository", &[("name", "a&b\"<"), ("q", "")]);
        assert_eq!(h, "/console/repository?name=a%26b%22%3C");
    }

    #[test]
    fn tables_and_pages_escape_what_they_are_given() {
        let t = table("Tags <b>", &["<h>"], &[vec![esc("<i>")]]);
        assert!(t.contains("Tags &lt;b&gt;"));
        assert!(t.contains("&lt;h&gt;"));
        assert!(!t.contains("<i>"));
        let p = page(
            &Frame {
                title: "</title><script>",
                section: "repositories",
                who: Some(("arn:aws:iam::1:user/<x>", "\"tok")),
                crumbs: vec![("<c>".into(), "/console/?a=\"".into())],
                refresh: None,
            },
            "",
        );
        assert!(!p.contains("<script>"));
        assert!(!p.contains("<x>"));
        assert!(!p.contains("<c>"));
        assert!(p.contains("value=\"&quot;tok\""));
        let c = bar_chart("<t>", &[("<l>".into(), 1.0, "<v>".into(), "red\"")]);
        assert!(!c.contains("<t>") && !c.contains("<l>") && !c.contains("<v>"));
        assert!(!c.contains("red\""));
    }

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(time_secs(0.0), "1970-01-01 00:00 UTC");
        assert_eq!(time_secs(1_700_000_000.5), "2023-11-14 22:13 UTC");
        assert_eq!(day(19_000), "2022-01-08");
        assert_eq!(duration(30.0), "30 s");
        assert_eq!(duration(600.0), "10 min");
        assert!(
            short_digest(&format!("sha256:{}", "a".repeat(64))).contains(">sha256:aaaaaaaaaaaa<")
        );
    }
}
