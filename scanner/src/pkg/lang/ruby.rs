//! Ruby: installed gem specifications (`…/specifications/*.gemspec`, the
//! files RubyGems writes at install time). No Ruby is evaluated: the first
//! `<var>.name = …` and `<var>.version = …` assignments are read as
//! literals (`"x"`, `'x'`, `"x".freeze`, `%q{x}`), Trivy's approach.

use super::{LangError, package};
use crate::{Package, PackageKind};

/// The literal assigned to `<ident>.<field>` on this line, if it is one.
fn assignment<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let line = line.trim_start();
    let dot = line.find('.')?;
    let ident = &line[..dot];
    if ident.is_empty()
        || !ident
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let rest = line[dot + 1..].strip_prefix(field)?;
    let rest = rest.trim_start().strip_prefix('=')?;
    if rest.starts_with(['=', '~']) {
        return None;
    }
    literal(rest.trim())
}

/// A Ruby string literal, less `.freeze`.
fn literal(v: &str) -> Option<&str> {
    let v = v.strip_suffix(".freeze").unwrap_or(v).trim_end();
    let inner = if let Some(q) = v.strip_prefix("%q{").or_else(|| v.strip_prefix("%{")) {
        q.strip_suffix('}')?
    } else if let Some(q) = v.strip_prefix('"') {
        q.strip_suffix('"')?
    } else if let Some(q) = v.strip_prefix('\'') {
        q.strip_suffix('\'')?
    } else {
        return None;
    };
    let inner = inner.trim();
    (!inner.is_empty() && !inner.contains(['"', '\'', '#'])).then_some(inner)
}

pub(super) fn parse_gemspec(path: &str, bytes: &[u8]) -> Result<Vec<Package>, LangError> {
    let text = String::from_utf8_lossy(bytes);
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if name.is_none() {
            name = assignment(line, "name");
        }
        if version.is_none() {
            version = assignment(line, "version");
        }
        if name.is_some() && version.is_some() {
            break;
        }
    }
    match (name, version) {
        (Some(n), Some(v)) => Ok(vec![package(PackageKind::Gem, n, v, path)]),
        _ => Err(LangError::malformed(path, "no literal name and version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_gemspec() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lang/ruby");
        let b = std::fs::read(format!("{dir}/rake-13.0.6.gemspec")).unwrap();
        let p = parse_gemspec(
            "usr/lib/ruby/gems/3.1.0/specifications/rake-13.0.6.gemspec",
            &b,
        )
        .unwrap();
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("rake", "13.0.6")
        );
        assert_eq!(p[0].kind, PackageKind::Gem);
    }

    #[test]
    fn literal_forms() {
        let g = "Gem::Specification.new do |spec|\n  spec.name = %q{json}\n  spec.version = '2.6.1'\n  spec.name = \"later\"\nend\n";
        let p = parse_gemspec("x.gemspec", g.as_bytes()).unwrap();
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("json", "2.6.1")
        );
        // Comparisons and computed values are not assignments of literals.
        for g in [
            "s.name == \"x\"\ns.version = \"1\"\n",
            "s.name = NAME\ns.version = \"1\"\n",
            "s.name = \"x\"\ns.version = Foo::VERSION\n",
            "s.name = \"x#{y}\"\ns.version = \"1\"\n",
            "",
        ] {
            assert!(parse_gemspec("x.gemspec", g.as_bytes()).is_err(), "{g}");
        }
        assert_eq!(
            assignment("  s.version = \"1.0\".freeze", "version"),
            Some("1.0")
        );
        assert_eq!(assignment("s.versions = \"1.0\"", "version"), None);
        assert_eq!(
            assignment("s.required_rubygems_version = \"1.0\"", "version"),
            None
        );
    }
}
