//! The layering of `src/` as `docs/architecture.md` draws it, checked: every
//! `crate::…` path outside test code names a module of a lower rank, and the
//! faces (`/v2/`, the ECR API) reach state only through services, never the
//! metadata or blob store. A new module must be given a rank here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rank of each module: a module may use only modules of a lower rank.
const RANKS: &[(&str, u32)] = &[
    // Values and plumbing.
    ("digest", 0),
    ("config", 0),
    ("metrics", 0),
    ("sigv4", 0),
    ("reference", 1),
    ("http", 1),
    ("iam", 1),
    ("secrets", 1),
    ("aws_query", 1),
    ("audit", 1),
    // State.
    ("metadata", 2),
    ("storage", 2),
    // The job vocabulary: kinds and payloads any service may enqueue.
    ("jobs", 3),
    ("audit_trail", 3),
    // Key-encryption keys (the KMS-compatible key store and its custody).
    ("kms", 3),
    // The SSM parameters Berth answers (pure values; the SSM face and the
    // CloudFormation engine read them).
    ("parameters", 3),
    // Services.
    ("registry", 4),
    ("auth", 4),
    ("lifecycle", 5),
    ("gc", 5),
    ("scanning", 5),
    ("stacks", 5),
    ("replication", 5),
    ("pull_through", 5),
    // What the faces extract; the worker that runs jobs through services.
    ("app", 6),
    ("jobs::worker", 6),
    // Faces.
    ("distribution", 7),
    ("ecr_api", 7),
    ("kms_api", 7),
    ("ssm_api", 7),
    ("sts_api", 7),
    ("cloudtrail_api", 7),
    // A face over a face: CloudFormation's resource providers call the ECR
    // API in process, as the caller (a stack does what its caller could).
    ("cloudformation_api", 8),
    // The web console: its pages call the ECR API in process as the
    // signed-in caller (it sees what that caller could with the aws CLI).
    ("console", 8),
    // Commands.
    ("server", 9),
    ("admin", 10),
    ("maintenance", 10),
    // Fuzzing harnesses drive everything.
    ("fuzzing", 11),
];

/// Faces: protocol code that must not touch a store.
const FACES: &[&str] = &[
    "distribution",
    "ecr_api",
    "kms_api",
    "ssm_api",
    "sts_api",
    "cloudtrail_api",
    "cloudformation_api",
    "console",
];
const STORES: &[&str] = &["metadata", "storage"];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The module a source file belongs to (`src/jobs/worker.rs` is a layer of
/// its own), or `None` for the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [f] if f == "lib.rs" || f == "main.rs" => None,
        [f] => Some(f.trim_end_matches(".rs").to_string()),
        [d, f] if d == "jobs" && f == "worker.rs" => Some("jobs::worker".to_string()),
        [d, ..] => Some(d.clone()),
        [] => None,
    }
}

/// Test code: whole files (`tests.rs`, `testing.rs`) and every item after a
/// `#[cfg(test)]` attribute.
fn is_test_file(rel: &Path) -> bool {
    matches!(
        rel.file_name().and_then(|f| f.to_str()),
        Some("tests.rs" | "testing.rs")
    )
}

/// Line numbers survive what `production_code` removes.
fn keep_newline(out: &mut String, c: char) {
    if c == '\n' {
        out.push('\n');
    }
}

/// The source without comments, string literals and `#[cfg(test)]` items.
fn production_code(src: &str) -> String {
    // Drop comments and the contents of string literals (a URL's `//` or a
    // message's `crate::` are not imports).
    let mut out = String::with_capacity(src.len());
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                keep_newline(&mut out, chars[i]);
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && matches!(chars.get(i + 1), Some('"' | '#'))
            && !(i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len()
                && !(chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')))
            {
                keep_newline(&mut out, chars[j]);
                j += 1;
            }
            out.push_str("\"\"");
            i = j + 1 + hashes;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    keep_newline(&mut out, ch);
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && chars.get(i + 1) == Some(&'\\') {
            // An escaped char literal: '\n', '\'', '\u{7f}'.
            let mut j = i + 3;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A char literal such as '{' (lifetimes have no closing quote).
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Drop each item that follows `#[cfg(test)]`: up to its `;` or the
    // brace that closes its body.
    let mut kept = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (j, ch) in item.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        kept.extend(item[..end].chars().filter(|c| *c == '\n'));
        rest = &item[end..];
    }
    kept.push_str(rest);
    kept
}

/// The modules named by `crate::` paths in `code`, with their line numbers:
/// `crate::a::…`, and each item of `crate::{a::…, b}`.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    for (at, _) in code.match_indices("crate::") {
        if at > 0 {
            let before = code[..at].chars().next_back().unwrap();
            if before.is_alphanumeric() || before == '_' || before == '$' {
                continue;
            }
        }
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group, each with its first segment.
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(ch),
                    _ => {}
                }
            }
            items.push(item);
            for it in items {
                let it = it.trim();
                if !it.is_empty() {
                    found.push((full_module(it), line_of(at)));
                }
            }
        } else {
            found.push((full_module(after), line_of(at)));
        }
    }
    found
}

/// `jobs::worker::…` is the worker layer; any other path is its first segment.
fn full_module(path: &str) -> String {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let first = ident(path);
    if first == "jobs"
        && let Some(rest) = path.trim_start_matches("jobs").strip_prefix("::")
        && ident(rest) == "worker"
    {
        return "jobs::worker".to_string();
    }
    first
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every violation of the layering in the tree under `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let Some(module) = module_of(rel) else {
            continue;
        };
        if is_test_file(rel) {
            continue;
        }
        let Some(own) = rank(&module) else {
            bad.push(format!(
                "src/{}: module `{module}` has no rank in tests/layering.rs",
                rel.display()
            ));
            continue;
        };
        let code = production_code(&std::fs::read_to_string(&file).unwrap());
        let mut seen = BTreeMap::new();
        for (target, line) in crate_paths(&code) {
            if target == module {
                continue;
            }
            seen.entry(target).or_insert(line);
        }
        for (target, line) in seen {
            let why = match rank(&target) {
                None => Some(format!("`{target}` has no rank")),
                Some(r) if r >= own => Some(format!(
                    "`{module}` (rank {own}) uses `{target}` (rank {r}), which is not below it"
                )),
                Some(_)
                    if FACES.contains(&module.as_str()) && STORES.contains(&target.as_str()) =>
                {
                    Some(format!(
                        "the face `{module}` uses the store `{target}`: call a service instead"
                    ))
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                bad.push(format!(
                    "src/{}:{line} (after comments and test code are removed): {why}",
                    rel.display()
                ));
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

/// The checker itself: it sees plain, grouped and nested paths, and not
/// comments, strings or test code.
#[test]
fn the_checker_finds_what_it_must_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("metadata")).unwrap();
    std::fs::create_dir_all(src.join("jobs")).unwrap();
    std::fs::write(
        src.join("metadata/mod.rs"),
        "// crate::server is only a comment\n\
         const S: &str = \"see crate::server\";\n\
         use crate::{digest::Digest, config};\n\
         fn f() { crate::registry::x(); }\n\
         #[cfg(test)]\nmod tests { use crate::server; fn g() { if true { } } }\n\
         fn h() { let c = '{'; crate::digest::y(); }\n",
    )
    .unwrap();
    std::fs::write(src.join("digest.rs"), "use crate::{reference::{A, B}};\n").unwrap();
    std::fs::write(src.join("distribution.rs"), "use crate::metadata::Row;\n").unwrap();
    std::fs::write(src.join("jobs/worker.rs"), "use crate::{jobs::Kind, gc};\n").unwrap();
    std::fs::write(
        src.join("jobs/mod.rs"),
        "use crate::jobs::worker::Worker;\n",
    )
    .unwrap();
    std::fs::write(src.join("newthing.rs"), "\n").unwrap();
    let bad = violations(src).join("\n");
    assert!(
        bad.contains("src/metadata/mod.rs:4") && bad.contains("uses `registry`"),
        "{bad}"
    );
    assert!(!bad.contains("`server`"), "{bad}");
    assert!(bad.contains("`digest` (rank 0) uses `reference`"), "{bad}");
    assert!(!bad.contains("uses `config`"), "{bad}");
    assert!(
        bad.contains("the face `distribution` uses the store `metadata`"),
        "{bad}"
    );
    assert!(!bad.contains("src/jobs/worker.rs"), "{bad}");
    assert!(bad.contains("`jobs` (rank 3) uses `jobs::worker`"), "{bad}");
    assert!(bad.contains("module `newthing` has no rank"), "{bad}");
}
