//! Tidy checks in the style of rust-analyzer's: the source tree itself is the input.
//!
//! - No module imports from a layer above its own, as listed under "## Layers" in
//!   ARCHITECTURE.md (so the list and the code cannot drift apart).
//! - No SQL outside `src/store/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layer of every top-level module, from ARCHITECTURE.md: lines `N. \`a\`, \`b\` …` under
/// "## Layers", lowest first.
fn layers() -> HashMap<String, usize> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("doc");
    let section = text
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a \"## Layers\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = HashMap::new();
    for line in section.lines() {
        let Some((n, rest)) = line.trim().split_once(". ") else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        for name in rest.split('`').skip(1).step_by(2) {
            out.insert(name.to_owned(), n);
        }
    }
    assert!(out.len() > 10, "layer list not found: {out:?}");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("source")
        .lines()
        .map(|l| match l.find("//") {
            // Keep `//` inside strings (URLs): only cut when no quote precedes it on the line.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Every `crate::x` a piece of code names, `use crate::{x, y::z}` included.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let layers = layers();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&own) = layers.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        for target in crate_refs(&code(file)) {
            if target == module {
                continue;
            }
            match layers.get(&target) {
                Some(&layer) if layer > own => wrong.push(format!(
                    "{}: `{module}` (layer {own}) imports `{target}` (layer {layer})",
                    file.strip_prefix(ROOT).unwrap_or(file).display()
                )),
                Some(_) => {}
                None => wrong.push(format!(
                    "{}: `crate::{target}` is no module with a layer in ARCHITECTURE.md",
                    file.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up the layer list:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    // The checker itself: a store file naming the poller would be reported.
    let layers = layers();
    let refs =
        crate_refs("use crate::{poller::Poller, model};\nlet x = crate::timefmt::unix_now();");
    assert_eq!(refs, ["poller", "model", "timefmt"]);
    assert!(layers["poller"] > layers["store"]);
}

const SQL_WORDS: [&str; 8] = [
    "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "PRAGMA ", "BEGIN ", "VACUUM ",
];

/// String literals of a piece of code that read like SQL.
fn sql_strings(code: &str) -> Vec<String> {
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| SQL_WORDS.iter().any(|w| s.trim_start().starts_with(w)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn all_sql_lives_in_the_store() {
    let src = Path::new(ROOT).join("src");
    let store = src.join("store");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&store)) {
        for sql in sql_strings(&code(file)) {
            wrong.push(format!(
                "{}: {}",
                file.strip_prefix(ROOT).unwrap_or(file).display(),
                sql.chars().take(60).collect::<String>()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "SQL outside src/store/:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        sql_strings("let q = \"SELECT 1\"; let s = \"hello\";"),
        ["SELECT 1"],
        "the checker sees SQL"
    );
}
