//! Every `lark-api.md §N` cited in the code and docs names a section of `docs/lark-api.md`, the
//! repository's own account of the Lark API surface lark-sink relies on. A why-comment is only
//! worth something if the reader can follow it.

use std::path::{Path, PathBuf};

use regex::Regex;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            out.push(path);
        }
    }
}

#[test]
fn every_cited_section_of_lark_api_md_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("docs/lark-api.md")).expect("docs/lark-api.md");
    let heading = Regex::new(r"(?m)^#{2,3} (\d+(?:\.\d+)?)[. ]").unwrap();
    let sections: Vec<String> = heading
        .captures_iter(&spec)
        .map(|c| c[1].to_string())
        .collect();
    assert!(sections.len() > 20, "sections found: {sections:?}");

    // "lark-api.md §3", "lark-api.md §1.4–1.5", "lark-api.md §3-4", "lark-api.md §2.4, §3".
    let cite =
        Regex::new(r"lark-api\.md ?((?:[,;]? ?(?:and )?§ ?\d+(?:\.\d+)?(?:[-–]\d+(?:\.\d+)?)?)+)")
            .unwrap();
    let number = Regex::new(r"\d+(?:\.\d+)?").unwrap();
    let mut paths = Vec::new();
    for dir in ["connector", "tests", "docs", "transforms", "fuzz"] {
        files(&root.join(dir), &mut paths);
    }
    paths.push(root.join("README.md"));
    let (mut checked, mut missing) = (0, Vec::new());
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (line_no, line) in text.lines().enumerate() {
            for c in cite.captures_iter(line) {
                for n in number.find_iter(&c[1]) {
                    checked += 1;
                    if !sections.iter().any(|s| s == n.as_str()) {
                        missing.push(format!(
                            "{}:{}: §{}",
                            path.display(),
                            line_no + 1,
                            n.as_str()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} citations found: is the pattern right?"
    );
    assert!(
        missing.is_empty(),
        "cited sections missing from docs/lark-api.md:\n{}",
        missing.join("\n")
    );
}
