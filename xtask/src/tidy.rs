//! Tidy tests: the invariants of `ARCHITECTURE.md` checked on the source
//! tree, as plain `#[test]`s reading the files (as rust-analyzer's
//! `xtask/src/tidy.rs` does). They run with `cargo test -p xtask`, and so
//! with `cargo test --workspace`.
//!
//! - bollard only in `docker-driver`; hyper's server side only in
//!   `shim-registry`; clap only in `dlgrab`, `xtask` and `shim-registry`'s
//!   program (its optional `cli` feature, `src/main.rs`): in each crate's
//!   `Cargo.toml` and in its sources;
//! - no `println!`, `eprintln!`, `print!`, `eprint!` or `dbg!` in library
//!   code (test code aside);
//! - no import circle between `dlgrab`'s modules, and its layers: the
//!   routes import nothing of the flow above them, `plan` nothing of the
//!   flow or the routes;
//! - every crate root opens with `//!` docs.
//!
//! Sources are read through a small lexer ([`code_of`]) that blanks
//! comments, doc comments and literals, then cut into tokens; paths
//! (`a::b::{c, d::e}`) are read from the tokens, so a doc link or a string
//! naming `crate::plan` is no import. `#[cfg(test)]` items, and the files
//! of `#[cfg(test)] mod x;`, are left out where test code does not count.
//! This is a token-level reading, not a parser: enough for this tree's
//! code, and its unit tests below say what it understands.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

// ---------------------------------------------------------------------------
// The invariants, on the workspace's tree.
// ---------------------------------------------------------------------------

/// The crates whose code is a library: no printing outside test code.
/// Folders under the workspace root; `shim-registry/src/main.rs` is its
/// program, not its library.
const LIBRARY_SOURCES: &[&str] = &["shim-registry/src", "docker-driver/src", "layer-writer/src"];

/// The programs among the library crates' sources.
const PROGRAMS_IN_LIBRARIES: &[&str] = &["shim-registry/src/main.rs"];

/// Macros that print.
const PRINT_MACROS: &[&str] = &["println", "eprintln", "print", "eprint", "dbg"];

/// Only `docker-driver` may talk to the daemon through bollard.
#[test]
fn only_docker_driver_uses_bollard() {
    let ws = Workspace::load();
    let mut found = Vec::new();
    for member in ws.members.iter().filter(|m| m.dir != "docker-driver") {
        found.extend(member.deps_named(|name| name == "bollard"));
        for file in &member.files {
            found.extend(file.sites(file.path_lines(|p| p[0] == "bollard")));
        }
    }
    assert_none("bollard is used outside docker-driver", &found);
}

/// hyper's server side (`hyper::server`, `hyper_util::server`,
/// `serve_connection`, a `server` feature of hyper or hyper-util in a
/// crate's manifest) only in `shim-registry` (its `src/server.rs`, and its
/// tests' transport check) and in the test kit `tests` (`AuthzProxy`, a
/// daemon imitated for the tests). A new server elsewhere must be made on
/// purpose, by adding its crate here.
#[test]
fn only_shim_registry_serves_http() {
    const SERVERS: &[&str] = &["shim-registry", "tests"];
    let ws = Workspace::load();
    let mut found = Vec::new();
    for member in ws
        .members
        .iter()
        .filter(|m| !SERVERS.contains(&m.dir.as_str()))
    {
        for dep in member.deps() {
            let hyper = matches!(dep.name.as_str(), "hyper" | "hyper_util");
            if hyper && dep.text.contains("\"server") {
                found.push(member.manifest_site(&dep));
            }
        }
        for file in &member.files {
            let mut lines = file.path_lines(|p| {
                matches!(p, [crate_name, server, ..]
                    if (crate_name == "hyper" || crate_name == "hyper_util") && server == "server")
            });
            lines.extend(file.ident_lines(&["serve_connection", "serve_connection_with_upgrades"]));
            found.extend(file.sites(lines));
        }
    }
    assert_none("hyper's server side is used outside shim-registry", &found);
}

/// clap (and its `clap_*` companions) only in the programs: `dlgrab`,
/// `xtask`, and `shim-registry`'s program behind its optional `cli`
/// feature, i.e. an optional dependency the `cli` feature enables, used in
/// `shim-registry/src/main.rs` only.
#[test]
fn clap_only_in_programs() {
    const PROGRAMS: &[&str] = &["dlgrab", "xtask"];
    const BEHIND_CLI: &str = "shim-registry";
    const CLI_PROGRAM: &str = "shim-registry/src/main.rs";
    let is_clap = |name: &str| name == "clap" || name.starts_with("clap_");
    let ws = Workspace::load();
    let mut found = Vec::new();
    for member in ws
        .members
        .iter()
        .filter(|m| !PROGRAMS.contains(&m.dir.as_str()))
    {
        let behind_cli = member.dir == BEHIND_CLI;
        let cli = feature(&member.manifest, "cli");
        for dep in member.deps().into_iter().filter(|d| is_clap(&d.name)) {
            let gated = dep.section == "dependencies"
                && dep.optional
                && cli.contains(&format!("dep:{}", dep.key));
            if !(behind_cli && gated) {
                let mut site = member.manifest_site(&dep);
                if behind_cli {
                    site.push_str(
                        " (must be an optional [dependencies] entry the `cli` feature enables)",
                    );
                }
                found.push(site);
            }
        }
        for file in &member.files {
            if behind_cli && file.path == CLI_PROGRAM {
                continue;
            }
            found.extend(file.sites(file.path_lines(|p| is_clap(&p[0]))));
        }
    }
    assert_none(
        "clap is used outside dlgrab, xtask and shim-registry's program",
        &found,
    );
}

/// Libraries emit `tracing` events and never print (test code may).
#[test]
fn libraries_never_print() {
    let ws = Workspace::load();
    let mut found = Vec::new();
    for library in LIBRARY_SOURCES {
        let files: Vec<&SourceFile> = ws
            .files()
            .filter(|f| f.path.starts_with(&format!("{library}/")))
            .filter(|f| !PROGRAMS_IN_LIBRARIES.contains(&f.path.as_str()))
            .collect();
        let src: Vec<(String, &str)> = files
            .iter()
            .map(|f| (f.path[library.len() + 1..].to_owned(), f.text.as_str()))
            .collect();
        let test_only = test_only_files(&src);
        for file in files {
            let rel = &file.path[library.len() + 1..];
            if test_only.contains(rel) {
                continue;
            }
            let code = Code::of(&file.text).without_tests();
            found.extend(file.sites(print_lines(&code.tokens)));
        }
    }
    assert_none(
        "a library prints (libraries emit tracing events; only programs print)",
        &found,
    );
}

/// Every crate root (library, program, test binary) opens with `//!` docs.
#[test]
fn crate_roots_open_with_docs() {
    let ws = Workspace::load();
    let mut found = Vec::new();
    for file in ws.files().filter(|f| is_crate_root(&f.path)) {
        let first = file
            .text
            .lines()
            .enumerate()
            .find(|(_, line)| !line.trim().is_empty());
        match first {
            Some((_, line)) if line.starts_with("//!") => {}
            Some((index, line)) => found.push(format!(
                "{}:{}: opens with `{}`, not `//!` docs",
                file.path,
                index + 1,
                line.trim()
            )),
            None => found.push(format!("{}:1: empty, no `//!` docs", file.path)),
        }
    }
    assert_none("a crate root does not open with `//!` docs", &found);
}

/// dlgrab's modules import one another without a circle (top-level
/// modules as nodes: `route/push/survey.rs` is `route`, `main.rs` is
/// `main`).
#[test]
fn dlgrab_modules_import_no_circle() {
    let graph = dlgrab_graph();
    let circles = graph.circles();
    let report: Vec<String> = circles.iter().map(|c| graph.describe_circle(c)).collect();
    assert_none("dlgrab's modules import each other in a circle", &report);
}

/// The routes sit below the flow: `main` → (`export` | `delta` | `copy`)
/// → `route/*` → `plan`. `route.rs` and `route/**` import none of the
/// modules above them.
#[test]
fn dlgrab_routes_import_nothing_above_them() {
    let graph = dlgrab_graph();
    let found = graph.forbidden("route", &["export", "delta", "copy", "cli", "main"]);
    assert_none("a dlgrab route imports a module above it", &found);
}

/// `plan` keeps the pure choice: it imports neither the flow nor the
/// routes nor the command line (nor `main`, which would make a circle).
#[test]
fn dlgrab_plan_imports_no_flow_module() {
    let graph = dlgrab_graph();
    let found = graph.forbidden("plan", &["route", "export", "delta", "copy", "cli", "main"]);
    assert_none("dlgrab's plan imports the flow, a route or the cli", &found);
}

/// `cli` only parses: `main` reads its `Args` and hands the flow its own
/// decision types (`plan`'s, `delta::Asked`, …); `generate` makes the
/// completions and the man page from the parser. No other module reads it.
#[test]
fn dlgrab_cli_is_read_by_main_and_generate_only() {
    let graph = dlgrab_graph();
    let found: Vec<String> = graph
        .importers_of("cli")
        .filter(|from| !["main", "generate"].contains(from))
        .flat_map(|from| graph.forbidden(from, &["cli"]))
        .collect();
    assert_none("a dlgrab module below main reads the command line", &found);
}

/// Fails listing `found`, one a line, under `what`.
#[track_caller]
fn assert_none(what: &str, found: &[String]) {
    assert!(
        found.is_empty(),
        "{what}:\n{}\n({} found)",
        found.join("\n"),
        found.len()
    );
}

/// The module graph of `dlgrab/src`.
fn dlgrab_graph() -> ModuleGraph {
    let ws = Workspace::load();
    let files: Vec<(String, &str)> = ws
        .files()
        .filter_map(|f| {
            Some((
                f.path.strip_prefix("dlgrab/src/")?.to_owned(),
                f.text.as_str(),
            ))
        })
        .collect();
    assert!(!files.is_empty(), "no file under dlgrab/src");
    ModuleGraph::build(&files, "dlgrab/src/")
}

/// Whether `path` (from the workspace root) is a crate root: a library,
/// a program, or a test, bench or example binary.
fn is_crate_root(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [_, "src", "lib.rs" | "main.rs"] => true,
        [_, "src", "bin", file] => file.ends_with(".rs"),
        [_, "tests" | "benches" | "examples", file] => file.ends_with(".rs"),
        [_, "tests" | "benches" | "examples", _, "main.rs"] => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The workspace's files.
// ---------------------------------------------------------------------------

/// The workspace's members and their files.
struct Workspace {
    members: Vec<Member>,
}

/// A workspace member.
struct Member {
    /// Its folder, relative to the workspace root (`docker-driver`).
    dir: String,
    /// Its `Cargo.toml`.
    manifest: String,
    /// Its Rust files, sorted.
    files: Vec<SourceFile>,
}

/// A Rust source file.
struct SourceFile {
    /// From the workspace root, `/`-separated.
    path: String,
    text: String,
}

impl Workspace {
    /// Every member the root `Cargo.toml` lists, with its files.
    fn load() -> Self {
        let root = crate::root();
        let manifest = read(&root.join("Cargo.toml"));
        let members = workspace_members(&manifest)
            .into_iter()
            .map(|dir| {
                let folder = root.join(&dir);
                let mut paths = Vec::new();
                rust_files(&folder, &mut paths);
                paths.sort();
                let files = paths
                    .iter()
                    .map(|p| SourceFile {
                        path: relative(&root, p),
                        text: read(p),
                    })
                    .collect();
                Member {
                    manifest: read(&folder.join("Cargo.toml")),
                    dir,
                    files,
                }
            })
            .collect();
        Workspace { members }
    }

    fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.members.iter().flat_map(|m| &m.files)
    }
}

impl Member {
    fn deps(&self) -> Vec<Dependency> {
        dependencies(&self.manifest)
    }

    /// The manifest's dependencies whose (package) name passes `wanted`.
    fn deps_named(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        self.deps()
            .into_iter()
            .filter(|d| wanted(&d.name))
            .map(|d| self.manifest_site(&d))
            .collect()
    }

    fn manifest_site(&self, dep: &Dependency) -> String {
        format!("{}/Cargo.toml:{}: {}", self.dir, dep.line, dep.text)
    }
}

impl SourceFile {
    /// Lines holding a path (use line or inline) that passes `wanted`;
    /// test code included: a test's import is the crate's too.
    fn path_lines(&self, wanted: impl Fn(&[String]) -> bool) -> Vec<usize> {
        let code = Code::of(&self.text);
        let mut lines: Vec<usize> = paths(&code.tokens)
            .into_iter()
            .filter(|p| wanted(&p.segments))
            .map(|p| p.line)
            .collect();
        lines.extend(extern_crates(&code.tokens, &wanted));
        lines
    }

    /// Lines holding one of the identifiers `names`.
    fn ident_lines(&self, names: &[&str]) -> Vec<usize> {
        Code::of(&self.text)
            .tokens
            .iter()
            .filter(|t| names.contains(&t.text.as_str()))
            .map(|t| t.line)
            .collect()
    }

    /// `file:line: text` for each line of `lines`, once each, in order.
    fn sites(&self, lines: Vec<usize>) -> Vec<String> {
        let lines: BTreeSet<usize> = lines.into_iter().collect();
        lines
            .into_iter()
            .map(|line| site(&self.path, line, &self.text))
            .collect()
    }
}

/// `path:line: the line's text`.
fn site(path: &str, line: usize, text: &str) -> String {
    let shown = text.lines().nth(line - 1).unwrap_or_default().trim();
    format!("{path}:{line}: {shown}")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `.rs` file under `dir`, skipping `target` and hidden folders.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// Manifests, read line by line (no TOML parser in xtask).
// ---------------------------------------------------------------------------

/// The folders the root manifest's `members = [...]` lists.
fn workspace_members(manifest: &str) -> Vec<String> {
    let start = manifest
        .find("members")
        .expect("the root Cargo.toml lists members");
    let rest = &manifest[start..];
    let list = &rest[..rest.find(']').expect("members = [...] closes")];
    quoted(list)
}

/// The `"…"` strings of `text`.
fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// One dependency entry of a manifest.
#[derive(Debug, Clone, PartialEq)]
struct Dependency {
    /// The key, as written (`hyper-util`, or a renamed key).
    key: String,
    /// The package's name, `-` as `_` (its `package = "…"` when renamed).
    name: String,
    /// `dependencies`, `dev-dependencies`, `build-dependencies` (a
    /// target-specific table counts as its kind).
    section: String,
    optional: bool,
    /// Its 1-based line and the entry's text (that line, or the table
    /// header of a `[dependencies.name]` table).
    line: usize,
    text: String,
}

/// Every dependency of `manifest`: `name = …` and `name.workspace = true`
/// lines of the dependency tables, and `[dependencies.name]` tables.
fn dependencies(manifest: &str) -> Vec<Dependency> {
    let mut deps: Vec<Dependency> = Vec::new();
    // The table a line is in: a dependency table (its kind), or one
    // dependency's own table (its index in `deps`).
    enum Table {
        Other,
        Deps(String),
        One(usize),
    }
    let mut table = Table::Other;
    for (index, raw) in manifest.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            let parts: Vec<&str> = header.split('.').collect();
            let kind = parts
                .iter()
                .position(|p| p.ends_with("dependencies"))
                .filter(|_| parts[0] != "workspace");
            table = match kind {
                Some(k) if k + 1 == parts.len() => Table::Deps(parts[k].to_owned()),
                Some(k) => {
                    let key = parts[k + 1..].join(".").trim_matches('"').to_owned();
                    deps.push(Dependency {
                        name: key.replace('-', "_"),
                        key,
                        section: parts[k].to_owned(),
                        optional: false,
                        line: index + 1,
                        text: line.to_owned(),
                    });
                    Table::One(deps.len() - 1)
                }
                None => Table::Other,
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        match &table {
            Table::Other => {}
            Table::Deps(section) => {
                let key = key.split('.').next().unwrap_or(key).trim_matches('"');
                let package = inline_value(value, "package");
                deps.push(Dependency {
                    key: key.to_owned(),
                    name: package.unwrap_or_else(|| key.to_owned()).replace('-', "_"),
                    section: section.clone(),
                    optional: inline_value(value, "optional").as_deref() == Some("true"),
                    line: index + 1,
                    text: line.to_owned(),
                });
            }
            Table::One(i) => {
                let dep = &mut deps[*i];
                dep.text.push_str(&format!(" {line}"));
                match key {
                    "package" => dep.name = value.trim_matches('"').replace('-', "_"),
                    "optional" => dep.optional = value == "true",
                    _ => {}
                }
            }
        }
    }
    deps
}

/// The value of `field` in an inline table `{ field = value, … }`.
fn inline_value(value: &str, field: &str) -> Option<String> {
    let inner = value.strip_prefix('{')?.strip_suffix('}')?;
    let mut depth = 0;
    let mut start = 0;
    let mut fields = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                fields.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&inner[start..]);
    fields.into_iter().find_map(|f| {
        let (k, v) = f.split_once('=')?;
        (k.trim() == field).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The entries of feature `name` in the `[features]` table.
fn feature(manifest: &str, name: &str) -> Vec<String> {
    let mut in_features = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == name
        {
            return quoted(value);
        }
    }
    Vec::new()
}

// ---------------------------------------------------------------------------
// Reading Rust: a lexer that blanks what is not code, tokens, paths.
// ---------------------------------------------------------------------------

/// `text` with comments (doc comments too), string, byte-string, raw-string
/// and char literals blanked: every character but a newline becomes a
/// space, so lines keep their numbers.
fn code_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && is_ident_char(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                let pair = (chars[i], chars.get(i + 1).copied());
                if pair == ('/', Some('*')) || pair == ('*', Some('/')) {
                    depth += if pair.0 == '/' { 1 } else { -1 };
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some((open, hashes)) = raw_string_start(&chars, i).filter(|_| !after_ident) {
            // `r#"…"#`, `br"…"`, `cr"…"`: up to a quote and as many `#`.
            for &c in &chars[i..open] {
                blank(&mut out, c);
            }
            i = open;
            while i < chars.len() {
                let closes = chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes;
                if closes {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        blank(&mut out, chars[i]);
                        if let Some(&escaped) = chars.get(i + 1) {
                            blank(&mut out, escaped);
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push(' ');
                        i += 1;
                        break;
                    }
                    other => {
                        blank(&mut out, other);
                        i += 1;
                    }
                }
            }
        } else if c == '\'' && next == Some('\\') {
            // An escaped char literal: `'\n'`, `'\''`, `'\u{1F600}'`.
            let end = chars[i + 3.min(chars.len() - i)..]
                .iter()
                .position(|&c| c == '\'')
                .map_or(chars.len(), |p| i + 3 + p + 1);
            for &c in &chars[i..end.min(chars.len())] {
                blank(&mut out, c);
            }
            i = end;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A plain char literal: `'{'`, `'"'`.
            out.push_str("   ");
            i += 3;
        } else {
            // Code, or a lifetime's quote.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i`, the start of a raw string (`r"`, `r#"`, `br"`, `cr#"`): the
/// index after its opening quote and its number of `#`.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    (chars.get(j) == Some(&'"')).then_some((j + 1, hashes))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A token of code: an identifier (or number), `::`, or one other
/// character; with its 1-based line.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

impl Token {
    fn is(&self, text: &str) -> bool {
        self.text == text
    }

    fn is_ident(&self) -> bool {
        self.text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    }
}

/// The tokens of code that [`code_of`] blanked.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident_char(c) {
            // A raw identifier `r#name` is `name`.
            if c == 'r'
                && chars.get(i + 1) == Some(&'#')
                && chars.get(i + 2).is_some_and(|&c| is_ident_char(c))
            {
                i += 2;
            }
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// A source file's code as tokens, and what `#[cfg(test)]` left out.
struct Code {
    tokens: Vec<Token>,
    /// The modules declared `#[cfg(test)] mod name;` (files of test code).
    test_modules: Vec<String>,
    /// Whether the whole file is test code (`#![cfg(test)]`).
    test_only: bool,
}

impl Code {
    fn of(text: &str) -> Self {
        Code {
            tokens: tokens(&code_of(text)),
            test_modules: Vec::new(),
            test_only: false,
        }
    }

    /// Without the items under `#[cfg(test)]` (or `#[cfg(all(test, …))]`).
    fn without_tests(self) -> Self {
        let t = &self.tokens;
        let mut kept = Vec::new();
        let mut test_modules = Vec::new();
        let mut i = 0;
        // Inner attributes first: `#![cfg(test)]` makes the file test code.
        while i + 2 < t.len() && t[i].is("#") && t[i + 1].is("!") && t[i + 2].is("[") {
            let end = closing(t, i + 2);
            if is_cfg_test(&t[i + 3..end.saturating_sub(1)]) {
                return Code {
                    tokens: Vec::new(),
                    test_modules,
                    test_only: true,
                };
            }
            kept.extend_from_slice(&t[i..end]);
            i = end;
        }
        while i < t.len() {
            if t[i].is("#") && t.get(i + 1).is_some_and(|n| n.is("[")) {
                let end = closing(t, i + 1);
                if is_cfg_test(&t[i + 2..end.saturating_sub(1)]) {
                    let item = skip_attributes(t, end);
                    if let Some(name) = mod_declaration(&t[item..]) {
                        test_modules.push(name);
                    }
                    i = item_end(t, item);
                    continue;
                }
            }
            kept.push(t[i].clone());
            i += 1;
        }
        Code {
            tokens: kept,
            test_modules,
            test_only: false,
        }
    }
}

/// The index after the bracket closing the one at `open`.
fn closing(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Whether an attribute's tokens (between `[` and `]`) are `cfg(test)` or
/// `cfg(all(…, test, …))`.
fn is_cfg_test(attribute: &[Token]) -> bool {
    let text: Vec<&str> = attribute.iter().map(|t| t.text.as_str()).collect();
    match text.as_slice() {
        ["cfg", "(", "test", ")"] => true,
        ["cfg", "(", "all", "(", inner @ .., ")", ")"] => {
            let mut depth = 0;
            inner.iter().any(|t| {
                match *t {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    _ => {}
                }
                depth == 0 && *t == "test"
            })
        }
        _ => false,
    }
}

/// The index after the outer attributes starting at `i`.
fn skip_attributes(tokens: &[Token], mut i: usize) -> usize {
    while i + 1 < tokens.len() && tokens[i].is("#") && tokens[i + 1].is("[") {
        i = closing(tokens, i + 1);
    }
    i
}

/// `name` when `tokens` start with `[pub[(…)]] mod name;`.
fn mod_declaration(tokens: &[Token]) -> Option<String> {
    let mut i = 0;
    if tokens.first()?.is("pub") {
        i = 1;
        if tokens.get(1)?.is("(") {
            i = closing(tokens, 1);
        }
    }
    let [keyword, name, semi, ..] = tokens.get(i..)? else {
        return None;
    };
    (keyword.is("mod") && name.is_ident() && semi.is(";")).then(|| name.text.clone())
}

/// The index after the item (or field, arm, statement) starting at `i`:
/// after its `;` or its closing brace (and a `;` right after it); a field
/// or an arm also ends at a `,`. Never past a bracket it did not open.
fn item_end(tokens: &[Token], i: usize) -> usize {
    const ITEMS: &[&str] = &[
        "pub",
        "fn",
        "mod",
        "impl",
        "struct",
        "enum",
        "union",
        "trait",
        "use",
        "const",
        "static",
        "type",
        "async",
        "unsafe",
        "extern",
        "macro_rules",
        "let",
    ];
    let is_item = tokens
        .get(i)
        .is_some_and(|t| ITEMS.contains(&t.text.as_str()));
    let mut depth = 0usize;
    let mut k = i;
    while k < tokens.len() {
        match tokens[k].text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" if depth == 0 => return k,
            ")" | "]" => depth -= 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    let after = k + 1;
                    let semi = tokens.get(after).is_some_and(|t| t.is(";"));
                    return if semi { after + 1 } else { after };
                }
            }
            ";" if depth == 0 => return k + 1,
            "," if depth == 0 && !is_item => return k + 1,
            _ => {}
        }
        k += 1;
    }
    tokens.len()
}

/// A path in the code, with its use tree expanded: `use a::{b, c::d}` is
/// `a::b` and `a::c::d`.
#[derive(Debug, Clone, PartialEq)]
struct PathRef {
    segments: Vec<String>,
    line: usize,
    /// The inline modules (`mod name { … }`) it sits in, outermost first.
    scope: Vec<String>,
}

/// Every path that starts `name::` (in use lines and inline) and does not
/// continue another (`::a::b`, `x.a::b`).
fn paths(tokens: &[Token]) -> Vec<PathRef> {
    let mut found = Vec::new();
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
            }
            "mod" => {
                if let [name, open, ..] = &tokens[i + 1..]
                    && name.is_ident()
                    && open.is("{")
                {
                    scope.push((name.text.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            _ => {}
        }
        let continues = i > 0 && (tokens[i - 1].is("::") || tokens[i - 1].is("."));
        if t.is_ident() && !continues && tokens.get(i + 1).is_some_and(|n| n.is("::")) {
            let (trees, end) = use_tree(tokens, i);
            let scope: Vec<String> = scope.iter().map(|(name, _)| name.clone()).collect();
            found.extend(trees.into_iter().map(|segments| PathRef {
                segments,
                line: t.line,
                scope: scope.clone(),
            }));
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// The paths of the use tree (or plain path) starting at `i`, and the
/// index after it.
fn use_tree(tokens: &[Token], i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    let mut k = i;
    while k < tokens.len() {
        let t = &tokens[k];
        if t.is("{") {
            let mut out = Vec::new();
            k += 1;
            while k < tokens.len() && !tokens[k].is("}") {
                if tokens[k].is(",") {
                    k += 1;
                    continue;
                }
                let (subtrees, end) = use_tree(tokens, k);
                out.extend(subtrees.into_iter().map(|s| [prefix.clone(), s].concat()));
                k = end.max(k + 1);
            }
            return (out, k + 1);
        }
        if t.is("*") || t.is_ident() {
            prefix.push(t.text.clone());
            k += 1;
        } else {
            break;
        }
        if t.is("*") || !tokens.get(k).is_some_and(|n| n.is("::")) {
            break;
        }
        k += 1;
    }
    if tokens.get(k).is_some_and(|t| t.is("as")) {
        k += 2;
    }
    let trees = if prefix.is_empty() {
        Vec::new()
    } else {
        vec![prefix]
    };
    (trees, k)
}

/// Lines of `extern crate name` whose one-segment path passes `wanted`.
fn extern_crates(tokens: &[Token], wanted: impl Fn(&[String]) -> bool) -> Vec<usize> {
    tokens
        .windows(3)
        .filter(|w| w[0].is("extern") && w[1].is("crate"))
        .filter(|w| wanted(std::slice::from_ref(&w[2].text)))
        .map(|w| w[0].line)
        .collect()
}

/// Lines calling a printing macro (`println!`, `std::dbg!`, …).
fn print_lines(tokens: &[Token]) -> Vec<usize> {
    tokens
        .windows(2)
        .filter(|w| PRINT_MACROS.contains(&w[0].text.as_str()) && w[1].is("!"))
        .map(|w| w[0].line)
        .collect()
}

/// The module path of a file under a crate's `src` (`route/push.rs` is
/// `route::push`, `x/mod.rs` is `x`, the crate root `main.rs` or `lib.rs`
/// is empty).
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    let is_root = parts.is_empty() && (stem == "main" || stem == "lib");
    if stem != "mod" && !is_root {
        parts.push(stem.to_owned());
    }
    parts
}

/// The files (paths under `src`) that are test code: `#![cfg(test)]`,
/// the files of `#[cfg(test)] mod x;` and every file below them.
fn test_only_files(files: &[(String, &str)]) -> BTreeSet<String> {
    let mut test_modules: Vec<Vec<String>> = Vec::new();
    let mut test_only = BTreeSet::new();
    for (rel, text) in files {
        let code = Code::of(text).without_tests();
        if code.test_only {
            test_only.insert(rel.clone());
        }
        let module = module_path(rel);
        for name in code.test_modules {
            test_modules.push([module.clone(), vec![name]].concat());
        }
    }
    for (rel, _) in files {
        let module = module_path(rel);
        if test_modules.iter().any(|t| module.starts_with(t)) {
            test_only.insert(rel.clone());
        }
    }
    test_only
}

// ---------------------------------------------------------------------------
// dlgrab's module graph.
// ---------------------------------------------------------------------------

/// Where an import was seen.
#[derive(Debug, Clone, PartialEq)]
struct Site {
    /// `file:line: text`.
    shown: String,
}

/// The import graph between a binary crate's top-level modules.
#[derive(Debug, Default)]
struct ModuleGraph {
    nodes: BTreeSet<String>,
    /// (from, to) → where.
    edges: BTreeMap<(String, String), Vec<Site>>,
}

/// The node of the crate root.
const ROOT: &str = "main";

impl ModuleGraph {
    /// The graph of `files` (path under `src`, text); `shown` prefixes the
    /// paths in messages (`dlgrab/src/`). Files named `tests.rs`, under a
    /// `tests` folder or of test code (`#[cfg(test)]`), `#[cfg(test)]`
    /// items, comments and literals are left out.
    fn build(files: &[(String, &str)], shown: &str) -> Self {
        let test_only = test_only_files(files);
        let files: Vec<&(String, &str)> = files
            .iter()
            .filter(|(rel, _)| !test_only.contains(rel))
            .filter(|(rel, _)| !rel.split('/').any(|p| p == "tests" || p == "tests.rs"))
            .collect();
        let node_of = |module: &[String]| module.first().cloned().unwrap_or_else(|| ROOT.into());
        let mut graph = ModuleGraph::default();
        for (rel, _) in &files {
            graph.nodes.insert(node_of(&module_path(rel)));
        }
        let tops: BTreeSet<String> = graph.nodes.iter().filter(|n| *n != ROOT).cloned().collect();
        for (rel, text) in files {
            let module = module_path(rel);
            let from = node_of(&module);
            let code = Code::of(text).without_tests();
            for path in paths(&code.tokens) {
                let scope = [module.clone(), path.scope.clone()].concat();
                let Some(to) = resolve(&path.segments, &scope, &tops) else {
                    continue;
                };
                if to != from {
                    let site = Site {
                        shown: site(&format!("{shown}{rel}"), path.line, text),
                    };
                    let sites = graph.edges.entry((from.clone(), to)).or_default();
                    if !sites.contains(&site) {
                        sites.push(site);
                    }
                }
            }
        }
        graph
    }

    /// Where `from` imports any of `forbidden`, one line each.
    fn forbidden(&self, from: &str, forbidden: &[&str]) -> Vec<String> {
        self.edges
            .iter()
            .filter(|((f, to), _)| f == from && forbidden.contains(&to.as_str()))
            .flat_map(|((f, to), sites)| {
                sites
                    .iter()
                    .map(move |s| format!("{f} -> {to}: {}", s.shown))
            })
            .collect()
    }

    /// The modules that import `to`.
    fn importers_of<'g>(&'g self, to: &'g str) -> impl Iterator<Item = &'g str> {
        self.edges
            .keys()
            .filter(move |(_, t)| t == to)
            .map(|(from, _)| from.as_str())
    }

    fn targets(&self, from: &str) -> impl Iterator<Item = &String> {
        self.edges
            .keys()
            .filter(move |(f, _)| f == from)
            .map(|(_, to)| to)
    }

    /// The strongly connected components of two nodes or more (Tarjan).
    fn tangles(&self) -> Vec<BTreeSet<String>> {
        struct State<'g> {
            graph: &'g ModuleGraph,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            on_stack: BTreeSet<&'g str>,
            found: Vec<BTreeSet<String>>,
        }
        fn visit<'g>(s: &mut State<'g>, v: &'g str) {
            let n = s.index.len();
            s.index.insert(v, n);
            s.low.insert(v, n);
            s.stack.push(v);
            s.on_stack.insert(v);
            let graph = s.graph;
            for w in graph.targets(v) {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
            if s.low[v] == s.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack.remove(w);
                    component.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    s.found.push(component);
                }
            }
        }
        let mut state = State {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        let nodes: BTreeSet<&str> = self
            .nodes
            .iter()
            .map(String::as_str)
            .chain(
                self.edges
                    .keys()
                    .flat_map(|(f, t)| [f.as_str(), t.as_str()]),
            )
            .collect();
        for node in nodes {
            if !state.index.contains_key(node) {
                visit(&mut state, node);
            }
        }
        state.found
    }

    /// The circles: for each module on one, the shortest circle through
    /// it, as `[a, b, …, a]` starting at its smallest name; each once,
    /// shortest first.
    fn circles(&self) -> Vec<Vec<String>> {
        let mut circles = BTreeSet::new();
        for tangle in self.tangles() {
            for start in &tangle {
                if let Some(circle) = self.shortest_circle(start, &tangle) {
                    circles.insert(rotated(circle));
                }
            }
        }
        let mut circles: Vec<Vec<String>> = circles.into_iter().collect();
        circles.sort_by_key(Vec::len);
        circles
    }

    /// The shortest circle from `start` back to it inside `within` (BFS).
    fn shortest_circle(&self, start: &str, within: &BTreeSet<String>) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for w in self.targets(v).filter(|w| within.contains(*w)) {
                if w == start {
                    let mut circle = vec![start.to_owned()];
                    let mut at = v;
                    while at != start {
                        circle.push(at.to_owned());
                        at = came_from[at];
                    }
                    circle.push(start.to_owned());
                    circle.reverse();
                    return Some(circle);
                }
                if !came_from.contains_key(w.as_str()) {
                    came_from.insert(w.as_str(), v);
                    queue.push_back(w.as_str());
                }
            }
        }
        None
    }

    /// `import circle: a -> b -> a` and, per edge, where it is imported.
    fn describe_circle(&self, circle: &[String]) -> String {
        let mut text = format!("import circle: {}", circle.join(" -> "));
        for pair in circle.windows(2) {
            let key = (pair[0].clone(), pair[1].clone());
            for site in self.edges.get(&key).into_iter().flatten() {
                text.push_str(&format!("\n    {} -> {}: {}", pair[0], pair[1], site.shown));
            }
        }
        text
    }
}

/// `[b, c, a, b]` → `[a, b, c, a]`: the circle from its smallest name.
fn rotated(circle: Vec<String>) -> Vec<String> {
    let ring = &circle[..circle.len() - 1];
    let start = ring
        .iter()
        .enumerate()
        .min_by_key(|(_, name)| name.as_str())
        .map_or(0, |(i, _)| i);
    let mut out: Vec<String> = ring[start..]
        .iter()
        .chain(&ring[..start])
        .cloned()
        .collect();
    out.push(out[0].clone());
    out
}

/// The top-level module (or [`ROOT`]) a path names, from a file or inline
/// module at `scope`; `None` for a path outside the crate (`std::…`) or
/// one that cannot be (`super` above the root).
fn resolve(segments: &[String], scope: &[String], tops: &BTreeSet<String>) -> Option<String> {
    let (first, rest) = segments.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => scope.to_vec(),
        "super" => {
            let mut base = scope.to_vec();
            base.pop()?;
            base
        }
        // At the crate root a module is named by its name alone.
        name if scope.is_empty() && tops.contains(name) => return Some(name.to_owned()),
        _ => return None,
    };
    let mut rest = rest;
    while let Some((next, after)) = rest.split_first()
        && next == "super"
    {
        base.pop()?;
        rest = after;
    }
    if let Some(top) = base.first() {
        return Some(top.clone());
    }
    match rest.first() {
        Some(name) if tops.contains(name) => Some(name.clone()),
        _ => Some(ROOT.to_owned()),
    }
}

// ---------------------------------------------------------------------------
// The reading itself, on small inputs.
// ---------------------------------------------------------------------------

mod unit {
    use super::*;

    /// The edges of a graph built from `files`, as `from -> to`.
    #[track_caller]
    fn check_edges(files: &[(&str, &str)], expected: &[&str]) {
        let files: Vec<(String, &str)> = files.iter().map(|(p, t)| ((*p).to_owned(), *t)).collect();
        let graph = ModuleGraph::build(&files, "src/");
        let edges: Vec<String> = graph
            .edges
            .keys()
            .map(|(f, t)| format!("{f} -> {t}"))
            .collect();
        assert_eq!(edges, expected);
    }

    /// The circles of a graph given as `from -> to` edges.
    #[track_caller]
    fn check_circles(edges: &[&str], expected: &[&str]) {
        let mut graph = ModuleGraph::default();
        for edge in edges {
            let (from, to) = edge.split_once(" -> ").unwrap();
            graph.nodes.extend([from.to_owned(), to.to_owned()]);
            graph.edges.insert((from.into(), to.into()), Vec::new());
        }
        let circles: Vec<String> = graph.circles().iter().map(|c| c.join(" -> ")).collect();
        assert_eq!(circles, expected);
    }

    #[test]
    fn circles_are_found_and_named() {
        check_circles(&["a -> b", "b -> a"], &["a -> b -> a"]);
        check_circles(
            &["main -> x", "x -> y", "y -> z", "z -> x"],
            &["x -> y -> z -> x"],
        );
        // Two circles through one module, each named.
        check_circles(
            &[
                "export -> route",
                "route -> export",
                "plan -> cli",
                "cli -> plan",
                "export -> plan",
            ],
            &["cli -> plan -> cli", "export -> route -> export"],
        );
        // One tangle: each module's shortest circle.
        check_circles(
            &["a -> b", "b -> c", "c -> a", "b -> a"],
            &["a -> b -> a", "a -> b -> c -> a"],
        );
        // No circle.
        check_circles(
            &[
                "main -> export",
                "export -> route",
                "route -> plan",
                "main -> plan",
            ],
            &[],
        );
        check_circles(&[], &[]);
    }

    #[test]
    fn circles_are_reported_with_their_import_lines() {
        let graph = ModuleGraph::build(
            &[
                (
                    "main.rs".into(),
                    "mod export;\nmod route;\nfn main() { export::run() }",
                ),
                (
                    "export.rs".into(),
                    "use crate::route::Job;\npub fn run() {}",
                ),
                (
                    "route.rs".into(),
                    "\n\nuse crate::export::run;\npub struct Job;",
                ),
            ],
            "dlgrab/src/",
        );
        let circles = graph.circles();
        assert_eq!(circles.len(), 1, "{circles:?}");
        assert_eq!(
            graph.describe_circle(&circles[0]),
            "import circle: export -> route -> export\n    \
             export -> route: dlgrab/src/export.rs:1: use crate::route::Job;\n    \
             route -> export: dlgrab/src/route.rs:3: use crate::export::run;"
        );
    }

    #[test]
    fn imports_are_crate_self_and_super_paths() {
        check_edges(
            &[
                (
                    "main.rs",
                    "mod cli; mod plan; mod route; fn main() { plan::choose(); route::store::run() }",
                ),
                (
                    "cli.rs",
                    "use crate::{plan::Via, report::{self, Reporter}};\nuse crate::Args;",
                ),
                (
                    "plan.rs",
                    "pub fn choose() { let _ = crate::cli::parse(); }",
                ),
                (
                    "report.rs",
                    "use std::io; use plan::x; use super::route::Job;",
                ),
                (
                    "route.rs",
                    "pub mod push; use super::cli as c; use self::push::Survey;",
                ),
                (
                    "route/push.rs",
                    "use super::Job; use super::super::export::E; use crate::route::save;",
                ),
                ("route/push/survey.rs", "use super::super::super::delta::D;"),
                ("export.rs", "pub struct E;"),
                ("delta.rs", "pub struct D;"),
            ],
            &[
                "cli -> main",
                "cli -> plan",
                "cli -> report",
                "main -> plan",
                "main -> route",
                "plan -> cli",
                "report -> route",
                "route -> cli",
                "route -> delta",
                "route -> export",
            ],
        );
    }

    #[test]
    fn comments_literals_and_test_code_are_no_imports() {
        check_edges(
            &[
                ("main.rs", "mod a; mod b; mod c;"),
                (
                    "a.rs",
                    r###"//! See [`crate::b::X`].
/// Like [`crate::b`] /* crate::b::Y */
/* nested /* crate::b::Z */ still a comment crate::b::W */
const S: &str = "crate::b::X // not a comment";
const R: &str = r#"crate::b "quoted" X"#;
const C: char = '{';
const Q: char = '"';
const E: char = '\'';
fn f<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use crate::b::X;
}
#[cfg(test)]
use crate::b::Y;
#[cfg(all(test, unix))]
fn only_in_tests() { crate::b::go() }
#[cfg(not(test))]
fn kept() { crate::c::go() }
#[cfg(test)]
mod helpers;
"###,
                ),
                ("a/helpers.rs", "use crate::b::Helper;"),
                ("b.rs", "#![cfg(test)]\nuse crate::a::X;"),
                ("b/tests.rs", "use crate::a::T;"),
                ("c/tests/x.rs", "use crate::a::T;"),
                ("c.rs", "use crate::a::K;"),
            ],
            &["a -> c", "c -> a"],
        );
    }

    #[test]
    fn inline_modules_move_super() {
        check_edges(
            &[
                ("main.rs", "mod copy; mod plan;"),
                (
                    "copy.rs",
                    "mod inner { use super::Held; use super::super::plan::P; }\nstruct Held;",
                ),
                ("plan.rs", "pub struct P;"),
            ],
            &["copy -> plan"],
        );
    }

    #[test]
    fn use_trees_are_expanded() {
        let code = Code::of(
            "use crate::{a::{self, B as C}, d::*, e};\nlet v = Vec::<u8>::new(); x.y::<T>();",
        );
        let found: Vec<(String, usize)> = paths(&code.tokens)
            .into_iter()
            .map(|p| (p.segments.join("::"), p.line))
            .collect();
        let expected = [
            ("crate::a::self", 1),
            ("crate::a::B", 1),
            ("crate::d::*", 1),
            ("crate::e", 1),
            ("Vec", 2),
        ];
        let expected: Vec<(String, usize)> = expected
            .iter()
            .map(|(p, l)| ((*p).to_owned(), *l))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn printing_is_found_outside_tests_and_docs() {
        let code = Code::of(
            r#"/// println!("in a doc")
fn f() { tracing::info!("println!"); std::println!("x"); }
fn g() {
    dbg!(1);
    eprint!("e");
}
#[cfg(test)]
mod tests { fn t() { println!("fine in tests"); } }
fn h() { let print = 1; w.print(); }
"#,
        )
        .without_tests();
        assert_eq!(print_lines(&code.tokens), [2, 4, 5]);
    }

    #[test]
    fn manifests_are_read_line_by_line() {
        let manifest = r#"
[package]
name = "x"

[features]
default = ["cli"]
cli = ["dep:clap", "dep:tracing-subscriber"]

[dependencies]
clap = { workspace = true, optional = true }
hyper-util.workspace = true
docker = { package = "bollard", version = "0.21" }

[target.'cfg(unix)'.dependencies]
rustix.workspace = true

[dev-dependencies.hyper]
version = "1"
features = ["server"]

[workspace.dependencies]
ignored = "1"
"#;
        let deps: Vec<(String, String, bool, usize)> = dependencies(manifest)
            .into_iter()
            .map(|d| (d.name, d.section, d.optional, d.line))
            .collect();
        let expected = [
            ("clap", "dependencies", true, 10),
            ("hyper_util", "dependencies", false, 11),
            ("bollard", "dependencies", false, 12),
            ("rustix", "dependencies", false, 15),
            ("hyper", "dev-dependencies", false, 17),
        ];
        let expected: Vec<(String, String, bool, usize)> = expected
            .iter()
            .map(|(n, s, o, l)| ((*n).to_owned(), (*s).to_owned(), *o, *l))
            .collect();
        assert_eq!(deps, expected);
        assert_eq!(
            feature(manifest, "cli"),
            ["dep:clap", "dep:tracing-subscriber"]
        );
        assert_eq!(
            workspace_members("[workspace]\nmembers = [\"a\",\n \"b-c\"]\n"),
            ["a", "b-c"]
        );
    }

    #[test]
    fn crate_roots() {
        for root in [
            "dlgrab/src/main.rs",
            "docker-driver/src/lib.rs",
            "docker-driver/tests/docker29.rs",
            "tests/tests/it/main.rs",
            "x/src/bin/tool.rs",
        ] {
            assert!(is_crate_root(root), "{root}");
        }
        for other in [
            "dlgrab/src/plan.rs",
            "tests/tests/it/store.rs",
            "x/src/a/main.rs",
        ] {
            assert!(!is_crate_root(other), "{other}");
        }
    }
}
