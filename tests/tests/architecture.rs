//! The house rules of docs/ARCHITECTURE.md, checked on the sources: no import circles between the
//! files of a crate, no source file over 900 lines (the app's shell at most 600), and the
//! feature store's file names spelled only in the store module (`core/src/store/`).
//!
//! The import graph is file-level: a file imports another when it names a path into it
//! (`use crate::a::b`, `use super::x`, an inline `crate::a::b::f`, or a child path in a `mod.rs`);
//! `mod` declarations are ownership, not imports. A path resolves to the deepest module file it
//! names. Comments (doc links included) and `#[cfg(test)] mod tests` blocks are not code paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const CRATES: [&str; 4] = ["core", "analysis", "experiments", "app"];

/// Module path (`["train", "config"]`) -> file, for every `.rs` under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                out.insert(parts, path);
            }
        }
    }
    out
}

/// The code of a file without comments and without its unit-test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string literal (a URL) is rare in these sources; a line cut there
            // only loses paths, never invents them.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(body: &str) -> Vec<String> {
    // `x as y` keeps `x`: mark the rename before whitespace goes.
    let body = body.replace(" as ", "@");
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    fn rec(prefix: &str, s: &str, out: &mut Vec<String>) {
        let Some(open) = s.find('{') else {
            out.push(format!("{prefix}{s}"));
            return;
        };
        let head = &s[..open];
        let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    rec(&format!("{prefix}{head}"), &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if start < inner.len() {
            rec(&format!("{prefix}{head}"), &inner[start..], out);
        }
    }
    rec("", &body, &mut out);
    out.into_iter()
        .map(|p| p.split('@').next().unwrap_or("").to_string())
        .collect()
}

fn ident_path(s: &str) -> Vec<String> {
    s.split("::")
        .map(|p| {
            p.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .take_while(|p| !p.is_empty())
        .collect()
}

/// The file-level import graph of one crate.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = modules(src);
    let resolve = |parts: &[String]| -> Option<Vec<String>> {
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].to_vec())
            .find(|p| files.contains_key(p))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let is_dir = matches!(
            path.file_stem().and_then(|s| s.to_str()),
            Some("mod" | "lib" | "main")
        );
        let text = code(path);
        let mut targets = Vec::new();
        // `use` statements (a line that starts one, up to its `;`).
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let Some(body) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
                .iter()
                .find_map(|p| t.strip_prefix(p))
            else {
                continue;
            };
            let mut stmt = body.to_string();
            let mut j = i + 1;
            while !stmt.contains(';') && j < lines.len() {
                stmt.push(' ');
                stmt.push_str(lines[j]);
                j += 1;
            }
            let stmt = stmt.split(';').next().unwrap_or("");
            for p in expand(stmt) {
                let seg: Vec<String> = p.split("::").map(String::from).collect();
                let target = match seg.first().map(String::as_str) {
                    Some("crate") => seg[1..].to_vec(),
                    Some("super") => {
                        let mut base = module[..module.len().saturating_sub(1)].to_vec();
                        let mut s = &seg[1..];
                        while s.first().is_some_and(|x| x == "super") {
                            base.pop();
                            s = &s[1..];
                        }
                        base.extend(s.iter().cloned());
                        base
                    }
                    Some("self") => {
                        let mut base = module.clone();
                        base.extend(seg[1..].iter().cloned());
                        base
                    }
                    Some(_) if is_dir => {
                        let mut base = module.clone();
                        base.extend(seg.iter().cloned());
                        base
                    }
                    _ => continue,
                };
                targets.push(target);
            }
        }
        // Inline paths.
        for (marker, up) in [("crate::", false), ("super::", true)] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(marker) {
                let before = rest[..i].chars().last();
                rest = &rest[i + marker.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let tail = ident_path(rest);
                let target = if up {
                    let mut base = module[..module.len().saturating_sub(1)].to_vec();
                    base.extend(tail);
                    base
                } else {
                    tail
                };
                targets.push(target);
            }
        }
        let entry = edges.entry(module.clone()).or_default();
        for t in targets {
            if let Some(r) = resolve(&t)
                && &r != module
            {
                entry.insert(r);
            }
        }
    }
    edges
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct S<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a Vec<String>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let Some((w, _)) = s.edges.get_key_value(w) else {
                    continue;
                };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let l = s.low[v].min(s.low[w]);
                    s.low.insert(v, l);
                } else if s.on.contains(w) {
                    let l = s.low[v].min(s.index[w]);
                    s.low.insert(v, l);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(if w.is_empty() {
                    "lib".to_string()
                } else {
                    w.join("/")
                });
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    for krate in CRATES {
        let found = cycles(&graph(&repo().join(krate).join("src")));
        assert!(found.is_empty(), "{krate}: import circles {found:?}");
    }
}

#[test]
fn the_checker_sees_a_circle_through_a_parent_module() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod x;\npub use x::X;\npub struct Y;\n",
    )
    .unwrap();
    std::fs::write(src.join("a/x.rs"), "use super::Y;\npub struct X;\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "// crate::a::x is only a comment\nfn f() -> crate::a::Y { todo!() }\n",
    )
    .unwrap();
    let g = graph(src);
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "a/x".to_string()]]);
    let b = g[&vec!["b".to_string()]].clone();
    assert_eq!(b, BTreeSet::from([vec!["a".to_string()]]));
}

#[test]
fn no_source_file_is_a_room_too_big_to_find_things_in() {
    for krate in CRATES {
        for path in modules(&repo().join(krate).join("src")).values() {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            let limit = if path.ends_with("app/src/app.rs") {
                600
            } else {
                900
            };
            assert!(
                lines <= limit,
                "{} has {lines} lines (at most {limit})",
                path.display()
            );
        }
    }
}

#[test]
fn only_the_store_module_spells_the_feature_stores_file_names() {
    // The probe array, preview, sample and live-snapshot names of docs/RUN_FORMAT.md.
    let spellings = [
        "_step{",
        "seed{seed}_",
        "cka_live.json",
        "\"xt\"",
        ":04}.png",
    ];
    let owner = repo().join("core/src/store").canonicalize().unwrap();
    let mut roots: Vec<PathBuf> = CRATES.iter().map(|c| repo().join(c).join("src")).collect();
    roots.extend(
        [
            "core/tests",
            "experiments/tests",
            "app/tests",
            "tests/tests",
        ]
        .iter()
        .map(|d| repo().join(d)),
    );
    for root in roots {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs")
                    || path.canonicalize().unwrap().starts_with(&owner)
                    || path.ends_with("tests/tests/architecture.rs")
                {
                    continue;
                }
                let text = code(&path);
                for s in spellings {
                    assert!(
                        !text.contains(s),
                        "{} spells the store file name `{s}`: use flowlens_core::store::StorePaths",
                        path.display()
                    );
                }
            }
        }
    }
}
