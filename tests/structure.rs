//! The crate's import graph has no circle: no file of `src/` imports one that imports it
//! back, directly or through others. Read from the source text: every `use` path and every
//! `crate::`/`super::` path in code (tests and comments left out) is resolved to the file
//! that defines its module, as the compiler would find it. A module's `mod.rs` that only
//! re-exports names counts as importing the files it re-exports from, so a child that
//! imports its parent's re-exports closes a circle too (import the sibling directly).
//!
//! `cargo test --test structure` prints the circle it finds, file by file, with the names
//! that tie each step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of the library (the binaries under `src/bin` are apart: they only use
/// the library).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name() != Some("bin".as_ref()) {
                files(&path, out);
            }
        } else if path.extension() == Some("rs".as_ref()) {
            out.push(path);
        }
    }
}

/// The text with comments, string and char literals blanked, and `#[cfg(test)]` modules
/// removed: only what the compiled code imports.
fn code_of(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += raw.find("\"#").map_or(rest.len(), |e| e + 5);
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\''
            && rest.len() > 2
            && (rest.as_bytes()[2] == b'\'' || rest.starts_with("'\\"))
        {
            // A char literal ('x' or '\n'); lifetimes ('a) are left alone.
            let end = rest[1..].find('\'').map_or(1, |e| e + 2);
            i += end;
        } else {
            let ch = rest.chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    // Drop `#[cfg(test)] mod name { ... }` blocks.
    let mut kept = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_mod, after.find('{'), after.find(';')) {
            (true, Some(open), semi) if semi.is_none_or(|s| s > open) => {
                let mut depth = 0;
                let mut end = after.len();
                for (k, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    kept.push_str(rest);
    kept
}

/// `a::{b, c::{d, e}}` as the paths it names, each a list of segments.
fn expand(path: &str) -> Vec<Vec<String>> {
    let path: String = path.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = path.find('{') else {
        return vec![path.split("::").map(str::to_owned).collect()];
    };
    let mut depth = 0;
    let mut close = path.len();
    for (k, c) in path[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = open + k;
                    break;
                }
            }
            _ => {}
        }
    }
    let (prefix, inner) = (&path[..open], &path[open + 1..close]);
    let mut parts = vec![];
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// What follows each `keyword` (`"use "`, `"mod "`) up to its `;`, wherever it stands:
/// after an attribute, a brace, or any visibility (`pub(crate) use`, `pub(super) use`).
fn statements(code: &str, keyword: &str) -> Vec<String> {
    let mut found = vec![];
    let mut from = 0;
    while let Some(at) = code[from..].find(keyword) {
        let at = from + at;
        from = at + keyword.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = code[from..].find(';') {
            found.push(code[from..from + end].trim().to_owned());
        }
    }
    found
}

/// The module path of a file: `src/upstream/actor.rs` is `[upstream, actor]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// The deepest file that defines a module on `segs`, from the crate's root.
fn resolve(segs: &[String]) -> Option<PathBuf> {
    let mut dir = src();
    let mut found = None;
    for seg in segs {
        let seg = seg.split(" as ").next().unwrap_or(seg).trim();
        let file = dir.join(format!("{seg}.rs"));
        let module = dir.join(seg).join("mod.rs");
        if file.exists() {
            found = Some(file);
        } else if module.exists() {
            found = Some(module);
        } else {
            break;
        }
        dir = dir.join(seg);
    }
    found
}

type Graph = BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>;

fn graph() -> Graph {
    let mut all = vec![];
    files(&src(), &mut all);
    let mut graph = Graph::new();
    for file in &all {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let me = module_of(file);
        let is_dir_module = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        );
        let children: BTreeSet<String> = statements(&code, "mod ")
            .into_iter()
            .filter(|m| m.chars().all(|c| c.is_alphanumeric() || c == '_'))
            .collect();
        let mut paths = vec![];
        for used in statements(&code, "use ") {
            paths.extend(expand(&used));
        }
        // Paths written in place, `crate::a::b::f()`.
        for start in ["crate::", "super::"] {
            let mut from = 0;
            while let Some(at) = code[from..].find(start) {
                let at = from + at;
                from = at + start.len();
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let end = code[at..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(code.len(), |e| at + e);
                paths.push(code[at..end].split("::").map(str::to_owned).collect());
            }
        }
        let edges = graph.entry(file.clone()).or_default();
        for mut path in paths {
            // `super::{a, b}` read in place leaves `super::` with nothing after it; the
            // `use` it belongs to names `a` and `b`.
            while path.last().is_some_and(String::is_empty) {
                path.pop();
            }
            if path.len() < 2 && path.first().is_some_and(|f| f == "crate" || f == "super") {
                continue;
            }
            let Some(first) = path.first() else { continue };
            let segs: Vec<String> = match first.as_str() {
                "crate" => path[1..].to_vec(),
                "super" => {
                    let mut base = me.clone();
                    base.pop();
                    let mut rest = &path[1..];
                    while rest.first().map(String::as_str) == Some("super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                "self" => me.iter().chain(&path[1..]).cloned().collect(),
                child if is_dir_module && children.contains(child) => {
                    me.iter().chain(&path).cloned().collect()
                }
                _ => continue,
            };
            if let Some(target) = resolve(&segs)
                && &target != file
            {
                let name = path.last().cloned().unwrap_or_default();
                edges.entry(target).or_default().insert(name);
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one: the files in order, back to `start`.
fn circle_through(graph: &Graph, start: &PathBuf) -> Option<Vec<PathBuf>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in graph.get(&at).into_iter().flat_map(|e| e.keys()) {
            if next == start {
                return Some(trail.clone());
            }
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph.len() > 50, "read {} files of src/", graph.len());
    let edges: usize = graph.values().map(BTreeMap::len).sum();
    assert!(edges > 100, "found {edges} imports: the reader lost them");
    for file in graph.keys() {
        if let Some(circle) = circle_through(&graph, file) {
            let steps: Vec<String> = circle
                .iter()
                .zip(circle.iter().skip(1).chain([&circle[0]]))
                .map(|(a, b)| {
                    let names = &graph[a][b];
                    let short = |p: &PathBuf| p.strip_prefix(src()).unwrap().display().to_string();
                    format!("{} -> {} ({names:?})", short(a), short(b))
                })
                .collect();
            panic!("an import circle:\n  {}", steps.join("\n  "));
        }
    }
}

/// The reader finds a circle where there is one (a test of the test): two modules of a
/// scratch tree that import each other.
#[test]
fn the_reader_sees_what_it_must() {
    let code = code_of(
        "use crate::a::{b, c::{d, e}}; // use crate::nope;\n\
         let s = \"use crate::nope;\";\n\
         #[cfg(test)]\nmod tests { use crate::nope; }\n\
         fn f() { crate::x::y(); }",
    );
    // A `use` after a brace or an attribute, or with any visibility, is still read.
    let later = code_of("fn g() {}\n#[allow(unused)] pub(super) use crate::later::Thing;");
    assert_eq!(statements(&later, "use "), ["crate::later::Thing"]);
    // `use<>` (precise capturing) and words ending in "use" are not imports.
    assert!(statements("fn f() -> impl Fn() + use<> {}; let reuse = 1;", "use ").is_empty());
    assert!(!code.contains("nope"), "{code}");
    let owned = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        expand("crate::a::{b, c::{d, e}}"),
        vec![
            owned(&["crate", "a", "b"]),
            owned(&["crate", "a", "c", "d"]),
            owned(&["crate", "a", "c", "e"]),
        ]
    );
    assert!(code.contains("crate::x::y"));
    let mut graph = Graph::new();
    let (a, b, c) = (PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c"));
    graph
        .entry(a.clone())
        .or_default()
        .entry(b.clone())
        .or_default();
    graph
        .entry(b.clone())
        .or_default()
        .entry(c.clone())
        .or_default();
    assert_eq!(circle_through(&graph, &a), None);
    graph
        .entry(c.clone())
        .or_default()
        .entry(a.clone())
        .or_default();
    assert_eq!(circle_through(&graph, &a), Some(vec![a, b, c]));
}
