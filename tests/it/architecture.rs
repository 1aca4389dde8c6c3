//! The shape of the code, checked: no import circles among the crate's modules, no oversized
//! files without a reason, and the README's configuration table is the one the code names.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The module a file belongs to at the given depth below `src/`: `store/tokens.rs` is
/// `store` at depth 1 and `store::tokens` at depth 2; `lib.rs` and `main.rs` are the root.
fn module_of(file: &Path, depth: usize) -> Option<String> {
    let relative = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return None;
    }
    parts.truncate(depth);
    Some(parts.join("::"))
}

/// The crate paths a file's production code imports (`use crate::…` and `crate::…` in
/// expressions), with `super::` resolved. Unit tests are left out: they may reach anywhere.
fn imports(file: &Path, own: &str, depth: usize) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let production = text.split("#[cfg(test)]").next().unwrap_or_default();
    let code: String = production
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let own_parts: Vec<&str> = own.split("::").collect();
    // A file's `super` is its module's parent when the file is a `mod.rs` or a leaf file.
    let is_mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
    let parent: Vec<&str> = if is_mod_rs {
        own_parts[..own_parts.len().saturating_sub(1)].to_vec()
    } else {
        let relative = file.strip_prefix(src()).unwrap();
        let parts: Vec<&str> = relative
            .iter()
            .map(|p| p.to_str().unwrap().trim_end_matches(".rs"))
            .collect();
        parts[..parts.len() - 1].to_vec()
    };
    let mut expanded = String::new();
    // Grouped imports: `use crate::{a::x, b::{y, z}}` names a and b.
    for statement in code.split("use ").skip(1) {
        let statement = statement.split(';').next().unwrap_or_default();
        if let Some(rest) = statement.trim().strip_prefix("crate::{") {
            for item in top_level_items(rest) {
                expanded.push_str(&format!(" crate::{item} "));
            }
        }
        if let Some(rest) = statement.trim().strip_prefix("super::{") {
            for item in top_level_items(rest) {
                expanded.push_str(&format!(" super::{item} "));
            }
        }
    }
    let whole = format!("{code} {expanded}");
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for piece in whole.split(prefix).skip(1) {
            let path: String = piece
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<&str> = base.clone();
            parts.extend(path.split("::").filter(|p| !p.is_empty()));
            if parts.is_empty() {
                continue;
            }
            parts.truncate(depth);
            found.insert(parts.join("::"));
        }
    }
    found
}

/// The comma-separated items at the top level of a `{…}` group.
fn top_level_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' if depth == 0 => break,
            '}' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => items.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    items.push(current);
    items
        .into_iter()
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty())
        .collect()
}

/// Module → the modules it imports, at `depth`.
fn import_graph(depth: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let Some(own) = module_of(&file, depth) else {
            continue;
        };
        let targets = imports(&file, &own, depth);
        let entry = graph.entry(own.clone()).or_default();
        for target in targets {
            // A module importing from its own children or itself is no circle.
            if target != own
                && !target.starts_with(&format!("{own}::"))
                && !own.starts_with(&format!("{target}::"))
            {
                entry.insert(target);
            }
        }
    }
    graph
}

/// A circle through `graph`, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(circle);
        }
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_circles() {
    let graph = import_graph(1);
    assert!(graph.len() > 15, "{graph:?}");
    assert!(
        graph["postoffice"].contains("transport"),
        "the checker sees imports: {graph:?}"
    );
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle: {}", circle.join(" → "));
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_circle(&graph).unwrap(), ["a", "b", "c", "a"]);
}

/// Files allowed past ~400 lines, each with its reason.
const LONG_FILES: &[(&str, &str)] = &[];

#[test]
fn no_source_file_grows_past_about_400_lines_without_a_reason() {
    for file in rust_files(&src()) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let name = file.strip_prefix(src()).unwrap().display().to_string();
        if lines > 420 {
            assert!(
                LONG_FILES.iter().any(|(long, _)| *long == name),
                "src/{name} has {lines} lines: split it by concern, or list it in LONG_FILES with why"
            );
        }
    }
}

#[test]
fn the_readme_configuration_table_is_the_one_the_code_names() {
    let readme = std::fs::read_to_string(src().join("../README.md")).unwrap();
    let table = graph_mailer::variables::markdown_table();
    assert!(
        readme.contains(&table),
        "the README's configuration table differs from variables.rs; it should read:\n{table}"
    );
}
