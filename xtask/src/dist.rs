//! `cargo xtask dist`: what a user installs, under `target/dist`.
//!
//! ```text
//! target/dist/dlgrab-<version>-x86_64-linux.tar.gz  the static binary, completions, man page, README, LICENSE
//! target/dist/dlgrab_<version>_amd64.deb            the same as a Debian package (below)
//! target/dist/completions/dlgrab.bash   bash (source it, or copy to bash-completion's folder)
//! target/dist/completions/_dlgrab       zsh (a folder of $fpath)
//! target/dist/completions/dlgrab.fish   fish (~/.config/fish/completions)
//! target/dist/man/dlgrab.1              man page (a man1 folder of $MANPATH)
//! ```
//!
//! The binary is built for `x86_64-unknown-linux-musl` (release, stripped),
//! statically linked: no libc, no loader, it runs on any x86_64 Linux. C
//! code in its tree (ring, zstd) is compiled with `musl-gcc` (Debian's
//! `musl-tools`, installed when missing). Completions and the man page come
//! from that binary (`dlgrab --generate …`); `dist completions` and `dist
//! man` make only those, from a debug build.
//!
//! The package installs `/usr/bin/dlgrab`, the man page, the completions in
//! the folders bash-completion, zsh and fish read, and the Docker CLI
//! plugin link `/usr/libexec/docker/cli-plugins/docker-dlgrab` (a folder
//! the CLI searches), so `docker dlgrab` works once it is installed.
//!
//! `cargo xtask dist --check` (a step of `cargo xtask test`) builds all of
//! it, then checks it as a user would meet it: the binary has no program
//! interpreter; in a `FROM scratch` image (nothing but the binary, built
//! with the classic builder, `--network none`) `dlgrab --version` names the
//! version and commit, `--help` prints usage, and a run with no daemon fails
//! as an error, not a crash; the image and its containers are removed
//! whatever happens. The package installs into a scratch root with `dpkg
//! --root` (its own dpkg database there), where the files and the plugin
//! link are checked, the link run as the plugin, and `dpkg -r` removes them.
//! The tarball's listing is checked too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use crate::sh::{apt_install, capture, run as run_cmd};

/// Where everything goes, from the workspace root.
const DIST: &str = "target/dist";

/// The static binary's target.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// What is generated: `--generate` value, file under `target/dist`.
const FILES: [(&str, &str); 4] = [
    ("bash", "completions/dlgrab.bash"),
    ("zsh", "completions/_dlgrab"),
    ("fish", "completions/dlgrab.fish"),
    ("man", "man/dlgrab.1"),
];

/// Where a packaged file comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The static binary.
    Binary,
    /// A file under `target/dist`.
    Dist(&'static str),
    /// A file of the workspace root.
    Root(&'static str),
}

/// The package's files: path in the package, source, mode.
const DEB_FILES: [(&str, Source, u32); 5] = [
    ("usr/bin/dlgrab", Source::Binary, 0o755),
    (
        "usr/share/bash-completion/completions/dlgrab",
        Source::Dist("completions/dlgrab.bash"),
        0o644,
    ),
    (
        "usr/share/zsh/vendor-completions/_dlgrab",
        Source::Dist("completions/_dlgrab"),
        0o644,
    ),
    (
        "usr/share/fish/vendor_completions.d/dlgrab.fish",
        Source::Dist("completions/dlgrab.fish"),
        0o644,
    ),
    (
        "usr/share/doc/dlgrab/README.md",
        Source::Root("README.md"),
        0o644,
    ),
];

/// The man page in the package (gzipped, as Debian ships man pages).
const DEB_MAN: &str = "usr/share/man/man1/dlgrab.1.gz";

/// The Docker CLI plugin link and where it points (relative: both lie
/// under `/usr`, as Debian's policy wants).
const DEB_PLUGIN: &str = "usr/libexec/docker/cli-plugins/docker-dlgrab";
const DEB_PLUGIN_TARGET: &str = "../../../bin/dlgrab";

/// The license text when the workspace root has no `LICENSE` file: the
/// workspace's license (Apache-2.0) as Debian ships it.
const LICENSE_FALLBACK: &str = "/usr/share/common-licenses/Apache-2.0";

const USAGE: &str = "usage: cargo xtask dist [--check | completions | man]";

/// `cargo xtask dist [--check | completions | man]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    match args {
        [] => build().map(|_| ()),
        ["--check"] => check(&build()?),
        ["completions"] => generate_from_debug("completions"),
        ["man"] => generate_from_debug("man"),
        _ => bail!("{USAGE}"),
    }
}

/// What `cargo xtask dist` made.
struct Dist {
    /// The static binary, where cargo built it.
    binary: PathBuf,
    /// `0.1.0`, as `dlgrab --version` names it.
    version: String,
    /// The whole `dlgrab --version` line.
    version_line: String,
    tarball: PathBuf,
    deb: PathBuf,
}

/// Builds the static binary, the completions and man page, the tarball and
/// the package.
fn build() -> Result<Dist> {
    let binary = build_static()?;
    generate(&binary, FILES.iter().collect())?;
    let version_line = output_of(Command::new(&binary).arg("--version"))?
        .trim_end()
        .to_owned();
    let version = version_line
        .strip_prefix("dlgrab ")
        .and_then(|rest| rest.split_once(" (commit "))
        .map(|(version, _)| version.to_owned())
        .with_context(|| format!("dlgrab --version printed {version_line:?}"))?;
    let dist = Path::new(DIST);
    let tarball = make_tarball(&binary, &version, dist)?;
    let deb = make_deb(&binary, &version, dist)?;
    println!("{}\n{}", tarball.display(), deb.display());
    Ok(Dist {
        binary,
        version,
        version_line,
        tarball,
        deb,
    })
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p dlgrab`,
/// stripped; returns the binary's path.
fn build_static() -> Result<PathBuf> {
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        apt_install(&["musl-tools"])?;
    }
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = rustup {
        ensure!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == TARGET),
            "the Rust target {TARGET} is missing: rustup target add {TARGET}"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    run_cmd(
        Command::new(cargo)
            .args(["build", "--release", "--target", TARGET, "-p", "dlgrab"])
            // No debug info (the workspace's release profile keeps line
            // tables for profiling): a smaller binary, a faster build.
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .env(format!("CC_{}", TARGET.replace('-', "_")), "musl-gcc"),
    )?;
    println!(
        "xtask: dlgrab for {TARGET} built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(target_dir().join(TARGET).join("release/dlgrab"))
}

/// cargo's target folder: `CARGO_TARGET_DIR`, or `target` in the workspace root.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// `dist completions` or `dist man`: from a debug build, quick.
fn generate_from_debug(what: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_cmd(Command::new(cargo).args(["build", "-q", "-p", "dlgrab"]))?;
    let wanted = FILES
        .iter()
        .filter(|(kind, _)| (*kind == "man") == (what == "man"))
        .collect();
    generate(&target_dir().join("debug/dlgrab"), wanted)
}

/// Writes each of `wanted` with `dlgrab --generate`.
fn generate(dlgrab: &Path, wanted: Vec<&(&str, &str)>) -> Result<()> {
    for (what, file) in wanted {
        let out = Command::new(dlgrab)
            .args(["--generate", what])
            .output()
            .with_context(|| format!("cannot run {}", dlgrab.display()))?;
        ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "dlgrab --generate {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = Path::new(DIST).join(file);
        fs::create_dir_all(path.parent().expect("files lie in folders"))?;
        fs::write(&path, &out.stdout)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// The license text: the root's `LICENSE`, or [`LICENSE_FALLBACK`].
fn license() -> Result<PathBuf> {
    [Path::new("LICENSE"), Path::new(LICENSE_FALLBACK)]
        .into_iter()
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("no LICENSE in the workspace root, nor {LICENSE_FALLBACK}"))
}

/// The tarball's folder name, also its name without `.tar.gz`.
fn tarball_stem(version: &str) -> String {
    format!("dlgrab-{version}-x86_64-linux")
}

/// What the tarball holds, under its folder.
const TARBALL_FILES: [&str; 7] = [
    "dlgrab",
    "completions/dlgrab.bash",
    "completions/_dlgrab",
    "completions/dlgrab.fish",
    "man/dlgrab.1",
    "README.md",
    "LICENSE",
];

/// `dlgrab-<version>-x86_64-linux.tar.gz`: one folder of that name with
/// [`TARBALL_FILES`], owned by root, in name order.
fn make_tarball(binary: &Path, version: &str, dist: &Path) -> Result<PathBuf> {
    let stem = tarball_stem(version);
    let stage = tempfile::Builder::new()
        .prefix(".stage-tar-")
        .tempdir_in(dist)?;
    let top = stage.path().join(&stem);
    for file in TARBALL_FILES {
        let from = match file {
            "dlgrab" => binary.to_path_buf(),
            "README.md" => PathBuf::from("README.md"),
            "LICENSE" => license()?,
            _ => dist.join(file),
        };
        copy(
            &from,
            &top.join(file),
            if file == "dlgrab" { 0o755 } else { 0o644 },
        )?;
    }
    folders_0755(&top)?;
    let tarball = dist.join(format!("{stem}.tar.gz"));
    run_cmd(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(stage.path())
            .arg(&stem),
    )?;
    Ok(tarball)
}

/// `dlgrab_<version>_amd64.deb`, built with `dpkg-deb` from a staged tree.
fn make_deb(binary: &Path, version: &str, dist: &Path) -> Result<PathBuf> {
    let stage = tempfile::Builder::new()
        .prefix(".stage-deb-")
        .tempdir_in(dist)?;
    let root = stage.path().join("root");
    for (path, from, mode) in DEB_FILES {
        let from = match from {
            Source::Binary => binary.to_path_buf(),
            Source::Dist(file) => dist.join(file),
            Source::Root(file) => PathBuf::from(file),
        };
        copy(&from, &root.join(path), mode)?;
    }
    // Man pages are gzipped, without a name or time in the header (`-n`).
    let man = root.join(DEB_MAN);
    mkdirs(man.parent().expect("a folder"))?;
    let gz = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(dist.join("man/dlgrab.1"))
        .output()
        .context("cannot run gzip")?;
    ensure!(gz.status.success(), "gzip failed");
    fs::write(&man, gz.stdout)?;
    set_mode(&man, 0o644)?;
    let plugin = root.join(DEB_PLUGIN);
    mkdirs(plugin.parent().expect("a folder"))?;
    std::os::unix::fs::symlink(DEB_PLUGIN_TARGET, &plugin)?;
    let copyright = root.join("usr/share/doc/dlgrab/copyright");
    fs::write(&copyright, copyright_file())?;
    set_mode(&copyright, 0o644)?;

    let control = root.join("DEBIAN/control");
    mkdirs(control.parent().expect("a folder"))?;
    fs::write(&control, control_file(version, installed_size(&root)?))?;
    set_mode(&control, 0o644)?;

    folders_0755(&root)?;
    let deb = dist.join(format!("dlgrab_{version}_amd64.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .context("cannot run dpkg-deb")?;
    ensure!(
        out.status.success(),
        "dpkg-deb --build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(deb)
}

/// The package's `DEBIAN/control`.
fn control_file(version: &str, installed_kib: u64) -> String {
    format!(
        "Package: dlgrab
Version: {version}
Architecture: amd64
Maintainer: dlgrab developers <dlgrab@example.invalid>
Installed-Size: {installed_kib}
Section: admin
Priority: optional
{homepage}Suggests: docker.io | docker-ce
Description: export single layers of a local Docker image
 dlgrab exports single layers of an image out of a local Docker daemon
 (or Podman, or a data root with no daemon) without exporting the whole
 image, each verified against its diff ID. It also runs as a Docker CLI
 plugin: docker dlgrab.
 .
 The binary is statically linked.
",
        homepage = field("Homepage", env!("CARGO_PKG_REPOSITORY")),
    )
}

/// `usr/share/doc/dlgrab/copyright`, machine-readable.
fn copyright_file() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dlgrab
{source}
Files: *
Copyright: dlgrab developers
License: {license}
 On Debian systems, the full text of the Apache License, Version 2.0 is
 in /usr/share/common-licenses/Apache-2.0.
",
        source = field("Source", env!("CARGO_PKG_REPOSITORY")),
        license = env!("CARGO_PKG_LICENSE"),
    )
}

/// A control file's `Name: value` line, or nothing when there is no value.
fn field(name: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("{name}: {value}\n")
    }
}

/// The staged files' size in KiB, rounded up per file, for `Installed-Size`.
fn installed_size(root: &Path) -> Result<u64> {
    let mut kib = 0;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(entry.path());
            } else {
                kib += entry.metadata()?.len().div_ceil(1024).max(1);
            }
        }
    }
    Ok(kib)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    mkdirs(to.parent().expect("files lie in folders"))?;
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn mkdirs(folder: &Path) -> Result<()> {
    fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))
}

/// Gives `top` and every folder under it mode 0755, whatever the umask
/// (a staged tree, before it is archived).
fn folders_0755(top: &Path) -> Result<()> {
    set_mode(top, 0o755)?;
    for entry in fs::read_dir(top)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            folders_0755(&entry.path())?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Runs `cmd`; its stdout, or an error with its stderr.
fn output_of(cmd: &mut Command) -> Result<String> {
    let (ok, out, err) = capture(cmd, Duration::from_secs(120))?;
    ensure!(ok, "{cmd:?} failed: {}", err.trim_end());
    Ok(out)
}

/// The start of a program's output, for an error message.
fn short(text: &str) -> String {
    match text.char_indices().nth(600) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `cargo xtask dist --check`: see the module docs.
fn check(dist: &Dist) -> Result<()> {
    ensure!(
        !has_interpreter(&fs::read(&dist.binary)?)?,
        "{} is dynamically linked (it names a program interpreter)",
        dist.binary.display()
    );
    println!("ok: {} is static", dist.binary.display());
    check_tarball(dist)?;
    check_deb(dist)?;
    check_scratch(dist)?;
    Ok(())
}

/// Whether an x86_64 ELF executable has a `PT_INTERP` program header:
/// the dynamic loader a dynamically linked program needs (a static-pie
/// program has none).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // 64-bit, little-endian, x86_64.
    ensure!(
        elf.starts_with(b"\x7fELF\x02\x01") && u16_at(0x12) == Some(0x3e),
        "not an x86_64 ELF file"
    );
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        bail!("a truncated ELF header");
    };
    let (phoff, size, count) = (
        usize::try_from(phoff)?,
        usize::from(size),
        usize::from(count),
    );
    ensure!(
        size >= 4 && phoff + size * count <= elf.len(),
        "a truncated program header table"
    );
    Ok((0..count).any(|i| u32_at(phoff + i * size) == Some(PT_INTERP)))
}

/// The tarball holds its folder with [`TARBALL_FILES`], owned by root.
fn check_tarball(dist: &Dist) -> Result<()> {
    let listing = output_of(Command::new("tar").args(["-tvzf"]).arg(&dist.tarball))?;
    let stem = tarball_stem(&dist.version);
    for file in TARBALL_FILES {
        let path = format!("{stem}/{file}");
        ensure!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" {path}")) && l.contains(" 0/0 ")),
            "{} lacks {path} (owned by 0/0):\n{listing}",
            dist.tarball.display()
        );
    }
    println!(
        "ok: {} holds {stem}/{{{}}}",
        dist.tarball.display(),
        TARBALL_FILES.join(",")
    );
    Ok(())
}

/// The package's metadata and listing, then a real install and removal in
/// a scratch root with its own dpkg database.
fn check_deb(dist: &Dist) -> Result<()> {
    let info = output_of(Command::new("dpkg-deb").arg("--info").arg(&dist.deb))?;
    for field in [
        "Package: dlgrab".to_owned(),
        format!("Version: {}", dist.version),
        "Architecture: amd64".to_owned(),
        "Maintainer: ".to_owned(),
        "Description: ".to_owned(),
    ] {
        ensure!(
            info.lines().any(|l| l.trim_start().starts_with(&field)),
            "dpkg-deb --info lacks {field:?}:\n{info}"
        );
    }
    let contents = output_of(Command::new("dpkg-deb").arg("--contents").arg(&dist.deb))?;
    let mut wanted: Vec<String> = DEB_FILES
        .iter()
        .map(|(path, _, _)| (*path).to_owned())
        .chain([
            DEB_MAN.to_owned(),
            "usr/share/doc/dlgrab/copyright".to_owned(),
        ])
        .map(|path| format!(" ./{path}"))
        .collect();
    wanted.push(format!(" ./{DEB_PLUGIN} -> {DEB_PLUGIN_TARGET}"));
    for path in &wanted {
        ensure!(
            contents
                .lines()
                .any(|l| l.ends_with(path.as_str()) && l.contains(" root/root ")),
            "dpkg-deb --contents lacks{path} (owned by root/root):\n{contents}"
        );
    }
    println!(
        "ok: dpkg-deb --info and --contents of {}",
        dist.deb.display()
    );

    // `dpkg --root` installs into the scratch root, its database there too.
    let scratch = tempfile::Builder::new()
        .prefix(".check-deb-")
        .tempdir_in(DIST)?;
    let root = fs::canonicalize(scratch.path())?;
    for folder in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(folder))?;
    }
    fs::write(root.join("var/lib/dpkg/status"), "")?;
    let dpkg = |args: &[&str]| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", root.display()))
            .arg("--log=/dev/null")
            .args(args);
        cmd
    };
    output_of(dpkg(&["--install"]).arg(fs::canonicalize(&dist.deb)?))?;
    let listed = output_of(&mut dpkg(&["--listfiles", "dlgrab"]))?;
    let installed = DEB_FILES.iter().map(|&(path, _, mode)| (path, mode));
    for (path, mode) in installed.chain([(DEB_MAN, 0o644)]) {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(root.join(path))
            .with_context(|| format!("dpkg -i installed no /{path}"))?;
        ensure!(
            meta.permissions().mode() & 0o777 == mode,
            "/{path} has mode {:o}, not {mode:o}",
            meta.permissions().mode() & 0o777
        );
        ensure!(
            listed.lines().any(|l| l == format!("/{path}")),
            "dpkg -L dlgrab does not list /{path}:\n{listed}"
        );
    }
    let plugin = root.join(DEB_PLUGIN);
    ensure!(
        fs::canonicalize(&plugin)? == root.join("usr/bin/dlgrab"),
        "/{DEB_PLUGIN} does not lead to /usr/bin/dlgrab"
    );
    let version = output_of(Command::new(root.join("usr/bin/dlgrab")).arg("--version"))?;
    ensure!(
        version.trim_end() == dist.version_line,
        "the installed dlgrab --version printed {version:?}"
    );
    // Run through the link, as the Docker CLI runs a plugin.
    let metadata = output_of(Command::new(&plugin).arg("docker-cli-plugin-metadata"))?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)
        .with_context(|| format!("docker-dlgrab's metadata is no JSON: {metadata}"))?;
    ensure!(
        metadata["SchemaVersion"] == "0.1.0" && metadata["Version"] == dist.version.as_str(),
        "docker-dlgrab docker-cli-plugin-metadata printed {metadata}"
    );
    // The Docker CLI finds the plugin through the link (a folder it is
    // told to search besides its own) and runs it.
    let config = tempfile::Builder::new()
        .prefix(".check-docker-config-")
        .tempdir_in(DIST)?;
    fs::write(
        config.path().join("config.json"),
        serde_json::json!({ "cliPluginsExtraDirs": [plugin.parent()] }).to_string(),
    )?;
    let version = output_of(
        Command::new("docker")
            .args(["dlgrab", "--version"])
            .env("DOCKER_CONFIG", config.path()),
    )?;
    ensure!(
        version.trim_end() == dist.version_line,
        "docker dlgrab --version printed {version:?}"
    );
    println!("ok: dpkg -i put the binary, man page, completions and /{DEB_PLUGIN} in place");
    println!("ok: docker dlgrab --version through the plugin link");

    output_of(&mut dpkg(&["--remove", "dlgrab"]))?;
    for (path, _, _) in DEB_FILES {
        ensure!(!root.join(path).exists(), "dpkg -r left /{path} behind");
    }
    ensure!(
        fs::symlink_metadata(&plugin).is_err(),
        "dpkg -r left /{DEB_PLUGIN} behind"
    );
    println!("ok: dpkg -r removed them");
    Ok(())
}

/// A `FROM scratch` image holding only the binary, on the Docker daemon
/// the Docker CLI picks (`DOCKER_HOST`, or the default socket).
fn check_scratch(dist: &Dist) -> Result<()> {
    let context = tempfile::Builder::new()
        .prefix(".check-scratch-")
        .tempdir_in(DIST)?;
    copy(&dist.binary, &context.path().join("dlgrab"), 0o755)?;
    fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY dlgrab /dlgrab\nENTRYPOINT [\"/dlgrab\"]\n",
    )?;
    let mut scratch = ScratchImage::new();
    let checked = scratch
        .build(context.path())
        .and_then(|()| scratch.runs(dist));
    let removed = scratch.remove();
    checked?;
    removed?;
    println!("ok: the image and its containers are gone");
    Ok(())
}

/// The scratch image and the containers run from it, removed with
/// [`ScratchImage::remove`], or on drop (a failure, a panic).
struct ScratchImage {
    image: String,
    containers: Vec<String>,
    /// The image and the intermediate images the classic builder made.
    layers: Vec<String>,
    removed: bool,
}

impl ScratchImage {
    fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Self {
            image: format!("dlgrab-dist-check:{}-{t:x}", std::process::id()),
            containers: Vec::new(),
            layers: Vec::new(),
            removed: false,
        }
    }

    /// `docker build` with the classic builder, no network.
    fn build(&mut self, context: &Path) -> Result<()> {
        let id = output_of(
            Command::new("docker")
                .args(["build", "-q", "--network", "none", "--force-rm", "-t"])
                .arg(&self.image)
                .arg(context)
                .env("DOCKER_BUILDKIT", "0"),
        )?;
        let history = output_of(Command::new("docker").args(["history", "-q", &self.image]))?;
        self.layers = std::iter::once(id.trim().to_owned())
            .chain(history.lines().map(str::to_owned))
            .filter(|l| !l.is_empty() && l != "<missing>")
            .collect();
        println!("ok: built {} FROM scratch", self.image);
        Ok(())
    }

    /// Runs the image with `args` (no network, stdin closed); returns
    /// (success, stdout, stderr).
    fn run(&mut self, args: &[&str]) -> Result<(bool, String, String)> {
        let name = format!("{}-{}", self.image.replace(':', "-"), self.containers.len());
        self.containers.push(name.clone());
        let ran = capture(
            Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--name",
                    &name,
                    &self.image,
                ])
                .args(args),
            Duration::from_secs(60),
        )?;
        Ok(ran)
    }

    fn runs(&mut self, dist: &Dist) -> Result<()> {
        let (ok, out, err) = self.run(&["--version"])?;
        ensure!(
            ok && out.trim_end() == dist.version_line,
            "dlgrab --version in a scratch container printed {:?} {:?}, not {:?}",
            short(&out),
            short(&err),
            dist.version_line
        );
        println!(
            "ok: in a scratch container, dlgrab --version: {}",
            out.trim_end()
        );
        let (ok, out, err) = self.run(&["--help"])?;
        ensure!(
            ok && out.contains("Usage: dlgrab"),
            "dlgrab --help in a scratch container printed {:?} {:?}",
            short(&out),
            short(&err)
        );
        println!("ok: in a scratch container, dlgrab --help");
        // No daemon there: an error on stderr and exit code 1, not a crash.
        let (ok, _, err) = self.run(&["--list", "busybox"])?;
        ensure!(
            !ok && err.contains("error") && !err.contains("panicked"),
            "dlgrab --list with no daemon, in a scratch container, printed {:?}",
            short(&err)
        );
        println!("ok: in a scratch container, dlgrab --list with no daemon fails cleanly");
        Ok(())
    }

    /// Removes the containers, then the image; fails if any of its images
    /// is left.
    fn remove(&mut self) -> Result<()> {
        self.removed = true;
        for name in &self.containers {
            let _ = capture(
                Command::new("docker").args(["rm", "-f", name]),
                Duration::from_secs(60),
            );
        }
        let _ = capture(
            Command::new("docker").args(["rmi", &self.image]),
            Duration::from_secs(60),
        );
        let left: Vec<&String> = self
            .layers
            .iter()
            .filter(|id| {
                capture(
                    Command::new("docker").args(["image", "inspect", id.as_str()]),
                    Duration::from_secs(60),
                )
                .is_ok_and(|(found, _, _)| found)
            })
            .collect();
        ensure!(left.is_empty(), "images left on the daemon: {left:?}");
        Ok(())
    }
}

impl Drop for ScratchImage {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::has_interpreter;

    /// A minimal x86_64 ELF header with one program header of type `kind`.
    fn elf(kind: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x12..0x14].copy_from_slice(&0x3e_u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64_u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56_u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1_u16.to_le_bytes());
        elf[64..68].copy_from_slice(&kind.to_le_bytes());
        elf
    }

    #[test]
    fn finds_a_program_interpreter() {
        assert!(has_interpreter(&elf(3)).unwrap());
        assert!(!has_interpreter(&elf(1)).unwrap());
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
        assert!(has_interpreter(&elf(3)[..100]).is_err());
    }

    #[test]
    fn the_workspace_s_own_test_binary_is_dynamic() {
        // Built for the host's glibc target: it names ld-linux.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
    }
}
