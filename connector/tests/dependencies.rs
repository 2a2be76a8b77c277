//! The dependency rules of docs/ARCHITECTURE.md ("Dependency rules"), checked on the source text
//! of `connector/src`, so a forbidden import fails `cargo test` instead of waiting for a review.
//!
//! The module graph is read from the paths the non-test code names: `crate::x…`, `crate::{x, y}`
//! and `super::…::x` chains that leave their top-level module (comments, string literals and
//! `#[cfg(test)]` items skipped). It must be acyclic, each top-level module may use only what
//! [`ALLOWED`] lists for it, and inside a folder the files (`mod.rs` aside) must not import each
//! other in a cycle. A few rules about what is absent are checked by the names the code uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module of `connector/src` may use; `"*"` = anything. The table of
/// docs/ARCHITECTURE.md ("Dependency rules") says the same in words: change both together.
/// A new top-level module needs a row here (the test says so).
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: everything may use them, they use nothing of the crate.
    ("secret", &[]),
    ("telemetry", &[]),
    ("control", &[]),
    ("record", &[]),
    // The pure core (the record's checks): no IO, builds without the `runtime` feature. A dead
    // letter's stage and class come from `dlq`; the canonical addresses from `lark::address`.
    ("envelope", &["dlq", "lark"]),
    // What a dead letter is (pure) and its writer; a dead letter carries Lark's error class, and
    // the writer uses the Kafka helpers of `source::kafka`.
    ("dlq", &["lark", "record", "source"]),
    // The Lark protocol: knows nothing about Kafka, the pipeline or the config.
    ("lark", &["secret", "telemetry"]),
    // Kafka in: knows nothing about Lark, delivery, the admin API, the config or the DLQ.
    ("source", &["telemetry"]),
    // The sink's transform step: the configured chain around `envelope::prepare`.
    ("transform", &["config", "envelope", "record", "telemetry"]),
    // Sending, updating and recalling; a keyed version's plan reads its key's `state` entry.
    ("delivery", &["envelope", "lark", "state", "telemetry"]),
    // A result names what a keyed message did (`delivery::keyed::Op`).
    (
        "results",
        &["delivery", "dlq", "envelope", "lark", "record", "source"],
    ),
    // Message state for the alert lifecycle: its changelog topic through `source::kafka`.
    ("state", &["source", "telemetry"]),
    // The top of the non-sink layers: builds the lower modules' own config types.
    ("config", &["delivery", "lark", "secret", "source"]),
    // The way back: Lark's events (the `lark::events` protocol) into a topic (`source::kafka`).
    ("inbound", &["config", "lark", "source", "telemetry"]),
    // The operator's surface.
    ("admin", &["config", "control", "secret"]),
    // The wiring, and the binary's subcommands.
    (
        "sink",
        &[
            "config",
            "control",
            "delivery",
            "dlq",
            "envelope",
            "lark",
            "record",
            "results",
            "secret",
            "source",
            "state",
            "telemetry",
            "transform",
        ],
    ),
    ("commands", &["*"]),
];

/// Where a crate may be named at all (by a path or a `use`), as file-path prefixes under
/// `connector/src`: the rules about absence that are about other crates.
const CRATE_HOMES: &[(&str, &[&str], &str)] = &[
    (
        "anyhow",
        &["main.rs"],
        "errors are typed (thiserror) in the library; only the binary edge uses anyhow",
    ),
    (
        "rdkafka",
        &[
            "source/",
            "record.rs",
            "dlq/",
            "results.rs",
            "state/",
            "sink/",
            "inbound/",
            "commands/",
        ],
        "lark (and the pure core) know nothing about Kafka",
    ),
    (
        "reqwest",
        &["lark/", "config/", "sink/", "commands/"],
        "only the Lark side speaks HTTP: source, delivery and the pure core never do",
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// One source file: where it is, its module path, and its code without comments, strings or
/// `#[cfg(test)]` items.
struct File {
    rel: String,
    module: Vec<String>,
    code: String,
}

impl File {
    /// The file at `rel` (a path under `connector/src`, `/`-separated) with source `text`.
    fn read(rel: String, text: &str) -> File {
        let mut module: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(str::to_string)
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        File {
            code: without_test_items(&strip(&mark_runtime(text))),
            rel,
            module,
        }
    }
}

fn files() -> Vec<File> {
    let root = src();
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("connector/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src");
            let rel = rel.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.push(File::read(rel, &text));
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// The attribute that keeps an item out of the pure build, as a mark [`strip`] leaves alone (it
/// blanks the string inside `#[cfg(feature = "runtime")]`).
const RUNTIME: &str = "#[cfg(runtime)]";

fn mark_runtime(text: &str) -> String {
    text.replace("#[cfg(feature = \"runtime\")]", RUNTIME)
}

/// The text with comments, string and char literals replaced by spaces (newlines kept).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&c, i) {
            // A raw string: r"…" or r#"…"#, as many #s closing as opening.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = c.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), or else a lifetime, kept.
            let end = if next == Some('\\') {
                (i + 2..c.len().min(i + 12)).find(|&j| c[j] == '\'')
            } else {
                Some(i + 2).filter(|&j| c.get(j) == Some(&'\''))
            };
            match end {
                Some(j) => i = j + 1,
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// The code without the items marked `#[cfg(test)]` (a test module, a test-only `use`).
fn without_test_items(code: &str) -> String {
    without_items(code, "#[cfg(test)]")
}

/// The code without the items that carry the attribute `attr`.
fn without_items(code: &str, attr: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(attr) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // The item ends at its first `;` outside brackets or with its outermost braces.
        let mut depth = 0i32;
        let mut end = rest.len();
        for (k, ch) in rest.char_indices().skip(attr.len()) {
            match ch {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The identifier starting at byte `at` of `s`, if any.
fn ident_at(s: &str, at: usize) -> Option<&str> {
    let rest = s.get(at..)?.trim_start();
    let len = rest
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(rest.len());
    (len > 0).then(|| &rest[..len])
}

/// The crate-root names a file's code reaches: `crate::x`, `crate::{x, y::z}` and `super::`
/// chains that climb out of the file's top-level module.
fn root_names(file: &File) -> BTreeSet<String> {
    let code = &file.code;
    let mut names = BTreeSet::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate") {
        let before = at.checked_sub(1).map(|b| bytes[b] as char);
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_') {
            continue;
        }
        let after = code[at + 5..].trim_start();
        let Some(path) = after.strip_prefix("::") else {
            continue;
        };
        let path = path.trim_start();
        if let Some(group) = path.strip_prefix('{') {
            // Only the group's top level: `crate::{a::{b, c}, d}` names a and d.
            let mut depth = 0;
            let mut start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    _ if start && (ch.is_alphanumeric() || ch == '_') => {
                        if let Some(id) = ident_at(group, k) {
                            names.insert(id.to_string());
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else if let Some(id) = ident_at(path, 0) {
            names.insert(id.to_string());
        }
    }
    // `super::` climbs one module per step from the file's own module.
    for (at, _) in code.match_indices("super") {
        let before = at.checked_sub(1).map(|b| bytes[b] as char);
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':') {
            continue;
        }
        let mut rest = &code[at..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super") {
            match r.trim_start().strip_prefix("::") {
                Some(r) => {
                    climbs += 1;
                    rest = r.trim_start();
                }
                None => break,
            }
        }
        if climbs == file.module.len() {
            if let Some(id) = ident_at(rest, 0) {
                names.insert(id.to_string());
            }
        }
    }
    names
}

/// The top-level modules lib.rs declares, and the names it re-exports from other crates
/// (`pub use lark_emulator as emulator`), which are nodes without edges.
fn crate_root() -> (BTreeSet<String>, BTreeSet<String>) {
    let lib = strip(&std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs"));
    let mut modules = BTreeSet::new();
    let mut aliases = BTreeSet::new();
    for stmt in lib.split(';') {
        let words: Vec<&str> = stmt
            .split(|ch: char| ch.is_whitespace() || ch == ']')
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(p) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(p + 1) {
                modules.insert(name.to_string());
            }
        }
        if words.contains(&"use") && words.get(words.len().wrapping_sub(2)) == Some(&"as") {
            if let Some(name) = words.last() {
                aliases.insert(name.to_string());
            }
        }
    }
    (modules, aliases)
}

/// `from → {to}` between top-level modules (lib.rs and main.rs are the crate roots, not nodes).
fn graph(files: &[File]) -> BTreeMap<String, BTreeSet<String>> {
    let (modules, aliases) = crate_root();
    let mut g: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in files {
        let Some(top) = f.module.first().filter(|m| modules.contains(*m)) else {
            continue;
        };
        for name in root_names(f) {
            if &name != top && (modules.contains(&name) || aliases.contains(&name)) {
                g.entry(top.clone()).or_default().insert(name);
            }
        }
    }
    g
}

/// A cycle of `g`, if it has one, as the path that closes it.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_depend_one_way() {
    let g = graph(&files());
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "the modules of connector/src import each other in a cycle: {}\n\
             (docs/ARCHITECTURE.md, \"Dependency rules\": dependencies point one way)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn each_module_uses_only_what_its_rule_allows() {
    let g = graph(&files());
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for (module, uses) in &g {
        let Some(may) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "`{module}` (connector/src) has no row in ALLOWED (connector/tests/dependencies.rs): \
                 add one listing what it may use (today: {uses:?}), and the same rule to \
                 docs/ARCHITECTURE.md, \"Dependency rules\""
            ));
            continue;
        };
        if may.contains(&"*") {
            continue;
        }
        for used in uses {
            if !may.contains(&used.as_str()) {
                problems.push(format!(
                    "`{module}` uses `{used}`, which its rule does not allow (allowed: {may:?}); \
                     see docs/ARCHITECTURE.md, \"Dependency rules\""
                ));
            }
        }
    }
    for (module, _) in ALLOWED {
        if !g.contains_key(*module) {
            problems.push(format!(
                "ALLOWED has a row for `{module}`, which lib.rs no longer declares: remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn files_of_one_folder_do_not_import_each_other_in_a_cycle() {
    // Inside a folder, each file is a node (its `mod.rs`, the folder's own doc and wiring, aside):
    // e.g. lark's client and token both sit on http.rs, neither on the other.
    let files = files();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.module.len() == 2) {
        let (folder, me) = (&f.module[0], &f.module[1]);
        let siblings: BTreeSet<&str> = files
            .iter()
            .filter(|s| s.module.len() == 2 && &s.module[0] == folder)
            .map(|s| s.module[1].as_str())
            .collect();
        let node = format!("{folder}::{me}");
        g.entry(node.clone()).or_default();
        let code = &f.code;
        for sibling in siblings.iter().filter(|s| *s != me) {
            let named = [
                format!("super::{sibling}"),
                format!("crate::{folder}::{sibling}"),
            ]
            .iter()
            .any(|p| {
                code.match_indices(p.as_str()).any(|(at, _)| {
                    let after = code[at + p.len()..].chars().next();
                    !after.is_some_and(|ch| ch.is_alphanumeric() || ch == '_')
                })
            });
            if named {
                g.entry(node.clone())
                    .or_default()
                    .insert(format!("{folder}::{sibling}"));
            }
        }
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "files of one folder import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn crates_are_named_only_where_their_rule_allows() {
    let mut problems = Vec::new();
    for f in files() {
        for (krate, homes, why) in CRATE_HOMES {
            if homes.iter().any(|h| f.rel.starts_with(h)) {
                continue;
            }
            let named = f.code.match_indices(krate).any(|(at, _)| {
                let before = f.code[..at].chars().next_back();
                let after = f.code[at + krate.len()..].chars().next();
                let ident = |ch: Option<char>| ch.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(before) && !ident(after) && before != Some(':')
            });
            if named {
                problems.push(format!("connector/src/{} names `{krate}`: {why}", f.rel));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn only_source_offsets_stores_offsets_and_only_source_commits() {
    let mut problems = Vec::new();
    for f in files() {
        if f.code.contains("store_offset") && f.rel != "source/offsets.rs" {
            problems.push(format!(
                "connector/src/{} stores offsets: only source/offsets.rs (Offsets::finish) may, \
                 after the record is finished (docs/ARCHITECTURE.md, invariant 1)",
                f.rel
            ));
        }
        let commits = f.code.contains("commit_consumer_state") || f.code.contains(".commit(");
        if commits && !f.rel.starts_with("source/") {
            problems.push(format!(
                "connector/src/{} commits offsets: only source/ does (on revoke, on close)",
                f.rel
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `mod` declarations of a module file: each name, and whether it needs `runtime`.
fn declared_modules(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut gated = false;
    for line in mark_runtime(text).lines().map(str::trim) {
        // Test modules are not part of what they test (`#[cfg(test)]`, perhaps with a
        // `#[path]`): they count as gated.
        if line == RUNTIME || line == "#[cfg(test)]" {
            gated = true;
            continue;
        }
        let decl = line
            .strip_prefix("pub ")
            .or_else(|| line.strip_prefix("pub(crate) "))
            .unwrap_or(line);
        if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
            out.push((name.trim().to_string(), gated));
        }
        if !line.starts_with("#[") {
            gated = false;
        }
    }
    out
}

/// The files of the pure core: the modules lib.rs declares without `runtime`, and inside them
/// the children declared without it (lark's `classify`, not its client). Module paths relative
/// to `connector/src`, e.g. `lark/classify.rs`.
fn pure_files() -> Vec<String> {
    let root = src();
    let mut pure = Vec::new();
    let mut todo: Vec<(PathBuf, String)> = vec![(root.join("lib.rs"), String::new())];
    while let Some((file, dir)) = todo.pop() {
        let text = std::fs::read_to_string(&file).expect("a module file");
        for (name, gated) in declared_modules(&text) {
            if gated {
                continue;
            }
            let flat = format!("{dir}{name}.rs");
            let folder = format!("{dir}{name}/mod.rs");
            let own = [flat, folder]
                .into_iter()
                .find(|f| root.join(f).is_file())
                .unwrap_or_else(|| panic!("`mod {name}` of {} has no file", file.display()));
            pure.push(own.clone());
            todo.push((root.join(&own), format!("{dir}{name}/")));
        }
    }
    pure.sort();
    pure
}

#[test]
fn the_pure_core_does_no_io() {
    // The compiler already refuses a pure module that reaches for a runtime-only crate or module
    // when lark-sink builds without `runtime` (the fuzz build of scripts/test.sh, or
    // `cargo check -p lark-sink --no-default-features`); this says it in every `cargo test`, and
    // also refuses the IO that std alone offers.
    let (modules, _) = crate_root();
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let runtime_modules: BTreeSet<String> = declared_modules(&lib)
        .into_iter()
        .filter(|(_, gated)| *gated)
        .map(|(m, _)| m)
        .collect();
    let pure = pure_files();
    assert!(
        pure.iter().any(|f| f == "lark/classify.rs"),
        "the pure core is read from lib.rs and the module files: {pure:?}"
    );
    let forbidden = [
        "tokio",
        "reqwest",
        "rdkafka",
        "lark_sink_transforms",
        "tracing",
        "std::fs",
        "std::net",
        "std::process",
    ];
    let mut problems = Vec::new();
    for f in files().iter().filter(|f| pure.contains(&f.rel)) {
        let code = without_items(&f.code, RUNTIME);
        for name in forbidden {
            let named = code.match_indices(name).any(|(at, _)| {
                let ident = |ch: Option<char>| ch.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(code[..at].chars().next_back())
                    && !ident(code[at + name.len()..].chars().next())
            });
            if named {
                problems.push(format!(
                    "connector/src/{} (pure core) names `{name}`: the pure core does no IO and \
                     builds without the `runtime` feature",
                    f.rel
                ));
            }
        }
        let pure_file = File {
            code,
            rel: f.rel.clone(),
            module: f.module.clone(),
        };
        for used in root_names(&pure_file).intersection(&runtime_modules) {
            if modules.contains(used) {
                problems.push(format!(
                    "connector/src/{} (pure core) uses `{used}`, which needs `runtime`",
                    f.rel
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_what_the_code_names() {
    // The reader itself, on the shapes it must get right.
    let file = |rel: &str, text: &str| File::read(rel.to_string(), text);
    let f = file(
        "lark/client.rs",
        r####"
        //! Uses [`crate::config`] in a comment only.
        use crate::{secret::Secret, telemetry};
        use super::super::record::X;
        use super::token::TokenCache;
        const S: &str = "crate::sink";
        const R: &str = r#"crate::admin "quoted""#;
        let c = '"'; let l: &'static str = "";
        /* crate::control */
        fn f() { crate::delivery::go() }
        #[cfg(test)]
        mod tests { use crate::source::X; fn g() { let _ = "}"; } }
        #[cfg(test)]
        use crate::results::Y;
        "####,
    );
    let names: Vec<String> = root_names(&f).into_iter().collect();
    assert_eq!(names, ["delivery", "record", "secret", "telemetry"]);
    let top = file("lark/mod.rs", "use super::config::X;");
    assert_eq!(root_names(&top).into_iter().collect::<Vec<_>>(), ["config"]);
}
