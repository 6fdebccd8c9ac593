//! Rules about where SQL comes from, checked over the workspace's source (not
//! its tests): they keep "every statement on a declared table carries its
//! access decision" true as code is added, without a reviewer having to notice.
//!
//! 1. SQL text made at run time becomes a `Statement` only in the query
//!    compiler (`gatehouse-rest`'s statement builder) and in `db`'s own DDL
//!    from the declared schema (`Statement::compiled` is public for them).
//! 2. A fixed statement (`Sql::both`, `Sql { sqlite, postgres }`) names only Gatehouse's own
//!    tables (`gatehouse_…`), never a declared one.
//! 3. Every statement built without a policy says why, at the call.
//! 4. A caller is made only where what it stands for was checked: the edge
//!    (`http::identity`), the signed-URL check (`storage::objects::signing`),
//!    and the composition root and the policy test command (`server`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers fail loudly by design.

use std::path::{Path, PathBuf};

/// Where run-time text may become a statement.
const COMPILERS: &[&str] = &[
    "crates/rest/src/sql.rs",
    "crates/db/src/statement.rs",
    "crates/db/src/declared.rs",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under some crate's `src/`, as (path from the workspace, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = workspace();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            walk(&src, &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(&root).unwrap().display().to_string();
            (relative, text)
        })
        .collect()
}

/// The source with `#[cfg(test)]` modules cut off (they close the file here).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn only_the_compiler_makes_statements_from_run_time_text() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| {
            !COMPILERS.contains(&path.as_str()) && without_tests(text).contains("::compiled(")
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "these build a Statement from run-time text outside the query compiler; build it with \
         gatehouse_rest::StatementBuilder (which needs the access decision), or a fixed Sql: \
         {offenders:?}"
    );
}

/// The string literals inside each `Sql { … }` and `Sql::both(…)` of `text`,
/// one string per constant.
fn fixed_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let next = [("Sql {", "};"), ("Sql::both(", ");")]
            .into_iter()
            .filter_map(|(open, close)| Some((rest.find(open)?, close)))
            .min();
        let Some((start, close)) = next else {
            break;
        };
        let body = &rest[start..];
        let end = body.find(close).unwrap_or(body.len());
        let mut literals = String::new();
        for (i, part) in body[..end].split('"').enumerate() {
            // Odd parts sit between quotes. Escaped quotes inside SQL (`\"o\"`)
            // split a literal in two, which only shortens the names seen.
            if i % 2 == 1 {
                literals.push_str(part);
                literals.push(' ');
            }
        }
        out.push(literals);
        rest = &body[end..];
    }
    out
}

/// Words that may follow FROM, INTO, UPDATE or JOIN without naming a table.
const NOT_TABLES: &[&str] = &["set", "select", "(select", "skip"];

#[test]
fn fixed_statements_touch_only_gatehouse_tables() {
    let mut offenders = Vec::new();
    let mut checked = 0;
    for (path, text) in sources() {
        if path.starts_with("crates/db/src/migrations") {
            continue; // Creates the tables; names nothing declared.
        }
        for statement in fixed_statements(without_tests(&text)) {
            checked += 1;
            let words: Vec<String> = statement
                .split_whitespace()
                .map(|w| {
                    w.trim_matches(|c: char| c == '\\' || c == ',')
                        .to_lowercase()
                })
                .collect();
            for pair in words.windows(2) {
                let (keyword, name) = (&pair[0], &pair[1]);
                if !["from", "into", "update", "join"].contains(&keyword.as_str()) {
                    continue;
                }
                if name.is_empty()
                    || name.starts_with("gatehouse_")
                    || NOT_TABLES.contains(&name.as_str())
                {
                    continue;
                }
                offenders.push(format!("{path}: {keyword} {name}"));
            }
        }
    }
    assert!(checked > 50, "found only {checked} fixed statements");
    assert!(
        offenders.is_empty(),
        "fixed statements may name only gatehouse_ tables; a declared table's statement needs \
         its access decision (gatehouse_rest::StatementBuilder): {offenders:?}"
    );
}

/// Where the call that opens `call` closes.
fn closing(call: &str) -> usize {
    let mut depth = 0;
    for (i, c) in call.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 1 => return i,
            ')' => depth -= 1,
            _ => {}
        }
    }
    call.len()
}

#[test]
fn every_statement_without_a_policy_says_why() {
    let mut calls = 0;
    let mut unexplained = Vec::new();
    for (path, text) in sources() {
        let text = without_tests(&text);
        for (at, _) in text.match_indices("without_policy(") {
            let call = &text[at..];
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let in_comment = text[line_start..at].trim_start().starts_with("//");
            if in_comment || call.starts_with("without_policy(dialect: Dialect") {
                continue; // Documentation, or the definition.
            }
            calls += 1;
            let arguments = &call["without_policy(".len()..closing(call)];
            // The second argument: a string literal of some length, the reason.
            let reason = arguments
                .find(", \"")
                .or_else(|| arguments.find(",\n"))
                .map(|comma| arguments[comma + 1..].trim().trim_end_matches(','))
                .unwrap_or("");
            if !(reason.starts_with('"') && reason.ends_with('"') && reason.len() > 12) {
                unexplained.push(format!("{path}: {}", arguments.trim()));
            }
        }
    }
    assert!(
        calls > 0,
        "no statement without a policy found: the search is broken"
    );
    assert!(
        unexplained.is_empty(),
        "give each statement without a policy its reason, as a string at the call: {unexplained:?}"
    );
}

/// Who may make which kind of caller, outside tests.
const CALLER_MAKERS: &[(&str, &[&str])] = &[
    (
        "Caller::holding(",
        &[
            "crates/http/src/identity.rs",
            "crates/server/src/server.rs",
            "crates/server/src/commands/policy_test.rs",
        ],
    ),
    (
        "Caller::signed_in(",
        &[
            "crates/http/src/identity.rs",
            "crates/server/src/commands/policy_test.rs",
        ],
    ),
    (
        "Caller::delegated(",
        &[
            "crates/storage/src/objects/signing.rs",
            // A job run with its enqueuer's rights: the role and id the door
            // recorded from the verified caller that queued it.
            "crates/functions/src/jobs.rs",
        ],
    ),
    (
        "LocalKeys::",
        &["crates/server/src/commands/policy_test.rs"],
    ),
];

#[test]
fn callers_are_made_only_where_their_material_was_checked() {
    let mut offenders = Vec::new();
    for (path, text) in sources() {
        let code = without_tests(&text);
        for (maker, allowed) in CALLER_MAKERS {
            if code.contains(maker) && !allowed.contains(&path.as_str()) {
                offenders.push(format!("{path}: {maker}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "a caller made from unchecked material: {offenders:?}"
    );
}
