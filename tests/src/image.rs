//! Deterministic images built with the classic builder from a generated context.

use std::io::{self, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::strings;
use crate::process::{tail, wait_within};
use crate::random::RandomReader;
use crate::{Daemon, Error};

/// Where the static busybox put into images comes from (Debian's `busybox-static`).
pub fn busybox_path() -> &'static str {
    "/bin/busybox"
}

/// The modification time of every file and directory in a build context
/// (2023-11-14), so that `COPY` layers are identical from run to run.
const MTIME: u64 = 1_700_000_000;

/// How long one `docker build` may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// One Dockerfile instruction, in order.
#[derive(Debug, Clone)]
enum Step {
    Busybox,
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Random {
        path: String,
        size: u64,
        seed: u64,
    },
    Run(String),
    Env(String, String),
    Label(String, String),
}

impl Step {
    fn makes_layer(&self) -> bool {
        !matches!(self, Step::Env(..) | Step::Label(..))
    }
}

/// Builds a `FROM scratch` image step by step, one layer per step except
/// [`env`](Self::env) and [`label`](Self::label), which add history rows
/// without a layer.
///
/// ```no_run
/// # use testkit::{daemon_or_skip, ImageBuilder, unique_name};
/// let Some(daemon) = daemon_or_skip("example") else { return };
/// let image = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-test/example")))
///     .busybox()
///     .file("/a", b"hello".to_vec())
///     .random_file("/big", 1 << 20, 42)
///     .run("echo hi > /x")
///     .env("K", "V")
///     .delete("/a")
///     .build(&daemon);
/// assert_eq!(image.layer_diff_ids.len(), 5);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ImageBuilder {
    tag: String,
    steps: Vec<Step>,
    no_cache: bool,
    /// `COPY --link` (BuildKit builds only, see [`BuildKitOptions`](crate::BuildKitOptions)).
    pub(crate) copy_link: bool,
}

/// An image that [`ImageBuilder::build`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The tag it was built with.
    pub tag: String,
    /// Its image ID (`sha256:…`, the config digest).
    pub id: String,
    /// Its diff IDs (`RootFS.Layers`), base first.
    pub layer_diff_ids: Vec<String>,
    /// Per layer, base first: the `docker history` ID of the row that made
    /// that layer (with the classic builder, an intermediate image whose top
    /// layer it is), or `None` where history shows `<missing>`.
    pub history_ids: Vec<Option<String>>,
    /// Every history row, oldest first, one per builder step.
    pub history: Vec<HistoryRow>,
}

/// One row of `docker history`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The row's image ID, `None` for `<missing>`.
    pub id: Option<String>,
    /// The instruction that made it.
    pub created_by: String,
    /// The index in `layer_diff_ids` of the layer it made; `None` for an
    /// empty-layer row (`ENV`, `LABEL`).
    pub layer: Option<usize>,
}

impl ImageBuilder {
    /// An empty `FROM scratch` image to be tagged `tag` (e.g. `dlgrab-test/foo:1`).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            steps: Vec::new(),
            no_cache: false,
            copy_link: false,
        }
    }

    /// A layer with Debian's static busybox at `/bin/busybox` and `/bin/sh`
    /// linking to it, so that later `RUN` steps work. Call it first.
    pub fn busybox(mut self) -> Self {
        self.steps.push(Step::Busybox);
        self
    }

    /// A layer with one file (mode 0644, fixed mtime), parent directories created.
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>) -> Self {
        self.file_mode(path, data, 0o644)
    }

    /// Like [`file`](Self::file) with a given mode, e.g. `0o755`.
    pub fn file_mode(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.steps.push(Step::File {
            path: path.to_owned(),
            data: data.into(),
            mode,
        });
        self
    }

    /// A layer with one file of `size` bytes of [`random_bytes`](crate::random_bytes)`(size, seed)`:
    /// incompressible and reproducible. Streamed, never held in memory.
    pub fn random_file(mut self, path: &str, size: u64, seed: u64) -> Self {
        self.steps.push(Step::Random {
            path: path.to_owned(),
            size,
            seed,
        });
        self
    }

    /// A layer made by `RUN /bin/sh -c <command>` (needs [`busybox`](Self::busybox)).
    pub fn run(mut self, command: &str) -> Self {
        self.steps.push(Step::Run(command.to_owned()));
        self
    }

    /// An `ENV key="value"` row: history without a layer.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.steps.push(Step::Env(key.to_owned(), value.to_owned()));
        self
    }

    /// A `LABEL key="value"` row: history without a layer.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.steps
            .push(Step::Label(key.to_owned(), value.to_owned()));
        self
    }

    /// A layer deleting `path` (`RUN rm -rf`): a whiteout in the layer tar.
    pub fn delete(self, path: &str) -> Self {
        let cmd = format!("rm -rf {}", quote(path));
        self.run(&cmd)
    }

    /// A layer replacing directory `path` by an empty one
    /// (`RUN rm -rf <path> && mkdir <path>`): an opaque directory in the layer tar.
    pub fn opaque_dir(self, path: &str) -> Self {
        let cmd = format!("rm -rf {p} && mkdir -p {p}", p = quote(path));
        self.run(&cmd)
    }

    /// A layer with a symbolic link `link` → `target` (`RUN ln -s`).
    pub fn symlink(self, link: &str, target: &str) -> Self {
        let cmd = format!("ln -s {} {}", quote(target), quote(link));
        self.run(&cmd)
    }

    /// A layer with a hard link `link` to the existing file `target` (`RUN ln`).
    pub fn hardlink(self, link: &str, target: &str) -> Self {
        let cmd = format!("ln {} {}", quote(target), quote(link));
        self.run(&cmd)
    }

    /// Builds with `--no-cache`, so that no layer is shared with an earlier build.
    pub fn no_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }

    /// How many layers the image will have.
    pub fn layer_count(&self) -> usize {
        self.steps.iter().filter(|s| s.makes_layer()).count()
    }

    /// The Dockerfile this builder generates.
    pub fn dockerfile(&self) -> String {
        let mut out = String::from("FROM scratch\n");
        for (i, step) in self.steps.iter().enumerate() {
            let line = match step {
                Step::Busybox | Step::File { .. } | Step::Random { .. } if self.copy_link => {
                    format!("COPY --link s{i}/ /")
                }
                Step::Busybox | Step::File { .. } | Step::Random { .. } => {
                    format!("COPY s{i}/ /")
                }
                Step::Run(cmd) => format!(
                    "RUN [\"/bin/sh\", \"-c\", {}]",
                    serde_json::Value::from(cmd.as_str())
                ),
                Step::Env(k, v) => format!("ENV {k}={}", dquote(v)),
                Step::Label(k, v) => format!("LABEL {}={}", dquote(k), dquote(v)),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Builds the image in `daemon`; panics with the builder's output if it fails.
    #[track_caller]
    pub fn build(&self, daemon: &Daemon) -> BuiltImage {
        self.try_build(daemon)
            .unwrap_or_else(|e| panic!("daemon {}: {e}", daemon.name))
    }

    /// Builds the image in `daemon`.
    pub fn try_build(&self, daemon: &Daemon) -> Result<BuiltImage, Error> {
        let busybox = self.busybox_bytes()?;
        let mut args = vec![
            "build",
            "--network",
            "none",
            "--force-rm",
            "-t",
            self.tag.as_str(),
        ];
        if self.no_cache {
            args.push("--no-cache");
        }
        args.push("-");
        let mut child = daemon
            .command()
            .args(&args)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let written = self.write_context(stdin, busybox.as_deref());
        let out = wait_within(child, BUILD_LIMIT, &args.join(" "))?;
        if !out.status.success() {
            return Err(Error::DockerFailed {
                args: args.join(" "),
                status: out.status.to_string(),
                output: tail(&out, 3000),
            });
        }
        written.map_err(Error::Context)?;
        self.describe(daemon)
    }

    /// The tag the image is built with.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether the builder runs with `--no-cache`.
    pub(crate) fn is_no_cache(&self) -> bool {
        self.no_cache
    }

    /// The static busybox when a step needs it.
    pub(crate) fn busybox_bytes(&self) -> Result<Option<Vec<u8>>, Error> {
        if self.steps.iter().any(|s| matches!(s, Step::Busybox)) {
            busybox_static().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Writes the context tar: `Dockerfile` and one folder `s<i>/` per `COPY` step.
    pub(crate) fn write_context(&self, sink: impl Write, busybox: Option<&[u8]>) -> io::Result<()> {
        let mut tar = tar::Builder::new(sink);
        let dockerfile = self.dockerfile();
        append_file(
            &mut tar,
            "Dockerfile",
            0o644,
            dockerfile.len() as u64,
            dockerfile.as_bytes(),
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Busybox => {
                    let data = busybox.expect("busybox is read when a step needs it");
                    append_dir(&mut tar, &format!("s{i}/"))?;
                    append_dir(&mut tar, &format!("s{i}/bin/"))?;
                    append_file(
                        &mut tar,
                        &format!("s{i}/bin/busybox"),
                        0o755,
                        data.len() as u64,
                        data,
                    )?;
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, format!("s{i}/bin/sh"), "busybox")?;
                }
                Step::File { path, data, mode } => {
                    let name = context_path(&mut tar, i, path)?;
                    append_file(&mut tar, &name, *mode, data.len() as u64, data.as_slice())?;
                }
                Step::Random { path, size, seed } => {
                    let name = context_path(&mut tar, i, path)?;
                    append_file(
                        &mut tar,
                        &name,
                        0o644,
                        *size,
                        RandomReader::new(*size, *seed),
                    )?;
                }
                Step::Run(_) | Step::Env(..) | Step::Label(..) => {}
            }
        }
        tar.into_inner()?.flush()
    }

    /// Reads back the built image: ID, diff IDs, history rows mapped to layers.
    pub(crate) fn describe(&self, daemon: &Daemon) -> Result<BuiltImage, Error> {
        let mismatch = |detail: String| Error::Mismatch {
            tag: self.tag.clone(),
            detail,
        };
        let inspect = daemon.try_inspect(&self.tag)?;
        let id = inspect["Id"].as_str().unwrap_or_default().to_owned();
        let layer_diff_ids = strings(&inspect["RootFS"]["Layers"]);
        if layer_diff_ids.len() != self.layer_count() {
            return Err(mismatch(format!(
                "{} layers, expected {}",
                layer_diff_ids.len(),
                self.layer_count()
            )));
        }
        let text = daemon.try_docker_stdout([
            "history",
            "--no-trunc",
            "--format",
            "{{json .}}",
            self.tag.as_str(),
        ])?;
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let row: Value = serde_json::from_str(line).map_err(|e| Error::BadOutput {
                args: "history".to_owned(),
                detail: e.to_string(),
            })?;
            rows.push(row);
        }
        rows.reverse();
        if rows.len() != self.steps.len() {
            return Err(mismatch(format!(
                "{} history rows, expected one per step ({})",
                rows.len(),
                self.steps.len()
            )));
        }
        let mut history = Vec::new();
        let mut history_ids = Vec::new();
        let mut next_layer = 0;
        for (row, step) in rows.iter().zip(&self.steps) {
            // Docker prints `sha256:<hex>`, Podman bare hex; `<missing>`
            // where the row has no image of its own.
            let id = row["ID"].as_str().and_then(|s| {
                let hex = s.strip_prefix("sha256:").unwrap_or(s);
                (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| format!("sha256:{hex}"))
            });
            let layer = step.makes_layer().then(|| {
                next_layer += 1;
                next_layer - 1
            });
            if layer.is_some() {
                history_ids.push(id.clone());
            }
            history.push(HistoryRow {
                id,
                created_by: row["CreatedBy"].as_str().unwrap_or_default().to_owned(),
                layer,
            });
        }
        Ok(BuiltImage {
            tag: self.tag.clone(),
            id,
            layer_diff_ids,
            history_ids,
            history,
        })
    }
}

impl BuiltImage {
    /// Removes the image's tag from `daemon`, best effort.
    pub fn remove(&self, daemon: &Daemon) {
        daemon.remove_image(&self.tag);
    }
}

/// Reads `/bin/busybox` and checks that it is statically linked (no ELF `PT_INTERP`).
pub(crate) fn busybox_static() -> Result<Vec<u8>, Error> {
    let path = busybox_path();
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|source| Error::BusyboxMissing {
            path: path.to_owned(),
            source,
        })?;
    if has_interpreter(&data) {
        return Err(Error::BusyboxNotStatic {
            path: path.to_owned(),
        });
    }
    Ok(data)
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")))
    };
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|k| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX) + k * usize::from(phentsize);
        u32_at(at) == Some(3)
    })
}

/// Adds the parent directories of `path` under `s<i>/` and returns the file's name in the context.
fn context_path<W: Write>(tar: &mut tar::Builder<W>, i: usize, path: &str) -> io::Result<String> {
    let rel = path.trim_start_matches('/');
    let mut dir = format!("s{i}/");
    append_dir(tar, &dir)?;
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push_str(part);
        dir.push('/');
        append_dir(tar, &dir)?;
    }
    Ok(format!("s{i}/{rel}"))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, size);
    tar.append_data(&mut h, name, data)
}

/// Single-quotes a word for `/bin/sh`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Double-quotes a Dockerfile `ENV`/`LABEL` word, escaping `\`, `"` and `$`.
fn dquote(word: &str) -> String {
    let mut out = String::from("\"");
    for c in word.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_has_one_instruction_per_step() {
        let b = ImageBuilder::new("x:1")
            .busybox()
            .file("/a/b", "hi")
            .run("echo \"q\" > /x")
            .env("K", "a $b")
            .label("k", "v")
            .delete("/it's");
        assert_eq!(
            b.dockerfile(),
            "FROM scratch\nCOPY s0/ /\nCOPY s1/ /\n\
             RUN [\"/bin/sh\", \"-c\", \"echo \\\"q\\\" > /x\"]\n\
             ENV K=\"a \\$b\"\nLABEL \"k\"=\"v\"\n\
             RUN [\"/bin/sh\", \"-c\", \"rm -rf '/it'\\\\''s'\"]\n"
        );
        assert_eq!(b.layer_count(), 4);
    }

    #[test]
    fn context_tar_is_reproducible_and_complete() {
        let b = ImageBuilder::new("x:1")
            .file("/etc/motd", "hello")
            .random_file("/big", 10_000, 9);
        let mut one = Vec::new();
        b.write_context(&mut one, None).unwrap();
        let mut two = Vec::new();
        b.write_context(&mut two, None).unwrap();
        assert_eq!(one, two);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(one.as_slice());
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), MTIME);
            names.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            [
                "Dockerfile",
                "s0/",
                "s0/etc/",
                "s0/etc/motd",
                "s1/",
                "s1/big"
            ]
        );
    }

    #[test]
    fn recognises_a_dynamic_elf() {
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"not an elf"));
    }
}
