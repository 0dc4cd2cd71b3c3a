//! The invariants of `docs/architecture.md` that the compiler does not check, checked by
//! reading the source: the top-level modules of `src/` import each other without cycles (so
//! each layer can be read, tested and replaced without the ones above it), no module below
//! `api/` takes the whole `Services` (each service receives the services it uses), and the
//! handlers in `api/` never touch storage.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The composition root and the doors: the only modules that may know every service.
const KNOWS_EVERY_SERVICE: &[&str] = &["api", "server", "services", "bench", "main", "lib"];

/// The top-level module a file of `src/` belongs to (`rooms` for `src/rooms/read.rs`).
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(SRC).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // Unit tests in a file of their own (`mod tests;`) may import anything.
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The file's code without its unit test module (it may import anything): everything before
/// a `#[cfg(test)]` that marks a `mod`. A `#[cfg(test)]` on another item does not end the code.
fn code(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap();
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let after = text[at + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ") {
            return text[..at].to_owned();
        }
        from = at + 1;
    }
    text
}

/// The modules named right after `crate::`, including each item of a
/// `use crate::{a::…, b, c::{…}}` group.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth one of the braces.
            let mut depth = 1;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && (c == ',' || c.is_whitespace()) {
                    at_start = true;
                    continue;
                }
                if at_start && depth == 1 && (c.is_ascii_alphanumeric() || c == '_') {
                    item.push(c);
                    continue;
                }
                if !item.is_empty() {
                    out.insert(std::mem::take(&mut item));
                }
                at_start = false;
            }
            if !item.is_empty() {
                out.insert(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// From module → to module → the files that import it.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| top_module(f)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let from = top_module(file);
        let shown = file.strip_prefix(SRC).unwrap().display().to_string();
        for to in crate_imports(&code(file)) {
            if to != from && modules.contains(&to) {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(shown.clone());
            }
        }
    }
    graph
}

/// Modules that reach `start` again, with the files of each step, if any.
fn cycle_through(
    graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    start: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for (next, files) in graph.get(&at).into_iter().flatten() {
            let step = format!("{at} -> {next} ({})", files.iter().next().unwrap());
            if next == start {
                let mut found = path.clone();
                found.push(step);
                return Some(found);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(step);
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let graph = graph();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|path| path[1..].join(", "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules of src/:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_module_below_the_api_takes_the_whole_services() {
    let graph = graph();
    let offenders: Vec<String> = graph
        .iter()
        .filter(|(from, _)| !KNOWS_EVERY_SERVICE.contains(&from.as_str()))
        .filter_map(|(from, to)| to.get("services").map(|files| format!("{from}: {files:?}")))
        .collect();
    assert!(
        offenders.is_empty(),
        "modules below api/ that use the whole Services:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn handlers_never_touch_storage() {
    let graph = graph();
    let api = graph.get("api").cloned().unwrap_or_default();
    assert!(
        !api.contains_key("storage"),
        "api/ reads or writes the store: {:?}",
        api.get("storage")
    );
}

#[test]
fn the_import_reader_reads_groups_and_paths() {
    let code = "use crate::{\n    error::{Error, Result},\n    rooms::RoomService,\n    stream,\n};\n\
                fn f() { crate::users::random_string(3); }";
    let found: Vec<String> = crate_imports(code).into_iter().collect();
    assert_eq!(found, ["error", "rooms", "stream", "users"]);
}
