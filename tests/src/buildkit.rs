//! The same deterministic images built by BuildKit, as Docker 23+ builds
//! them by default: `docker buildx build --builder default` (the `docker`
//! driver: the daemon's own BuildKit), with or without attestations,
//! `COPY --link`, and zstd layers on the containerd store.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::process::{tail, wait_within};
use crate::{Buildx, BuiltImage, Daemon, Engine, Error, ImageBuilder};

/// How long one `docker buildx build` may take.
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// Where a BuildKit build lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildKitOutput {
    /// `--load`: into the daemon's image store (on a classic store the
    /// attestations are dropped; on the containerd store the image is the
    /// index BuildKit made, attestations included).
    #[default]
    Load,
    /// `--output type=image,compression=zstd,force-compression=true,oci-mediatypes=true`:
    /// straight into the containerd image store, every layer compressed
    /// with zstd (a classic store keeps no compressed layers).
    Zstd,
}

/// What a BuildKit build is asked for; [`Default`] is what `docker
/// buildx build --load` does with nothing said (a provenance attestation,
/// no SBOM, plain `COPY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildKitOptions {
    /// `--provenance=<v>`; `None`: BuildKit's default (`mode=min`).
    pub provenance: Option<bool>,
    /// `--sbom=true` (the scanner image must be in reach of the daemon).
    pub sbom: bool,
    /// `COPY --link` for every copy step.
    pub link: bool,
    /// Where the image goes.
    pub output: BuildKitOutput,
}

/// Which builder made an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltBy {
    /// BuildKit, through docker-buildx.
    BuildKit,
    /// The classic builder (Podman, which has no BuildKit).
    Classic,
}

/// An image [`ImageBuilder::build_with_buildkit`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildKitImage {
    /// Tag, image ID, diff IDs, history rows, as for a classic build.
    pub image: BuiltImage,
    /// Which builder made it.
    pub built_by: BuiltBy,
    /// What BuildKit says it made (`containerimage.digest` in buildx's
    /// metadata file): the index digest when it made an index, else the
    /// image manifest's; `None` for a classic build.
    pub digest: Option<String>,
    /// `containerimage.descriptor`'s media type, when BuildKit said it.
    pub media_type: Option<String>,
}

impl ImageBuilder {
    /// Builds the image in `daemon` with BuildKit (`buildx` must be given
    /// for a dockerd), or, on Podman, with the classic builder (it says so
    /// on stderr); panics with the builder's output if it fails. The image
    /// is named by its tag (from [`unique_name`](crate::unique_name)), so
    /// the test's clean-up removes it; its ID is removed too.
    #[track_caller]
    pub fn build_with_buildkit(
        &self,
        daemon: &Daemon,
        buildx: Option<&Buildx>,
        options: &BuildKitOptions,
    ) -> BuildKitImage {
        self.try_build_with_buildkit(daemon, buildx, options)
            .unwrap_or_else(|e| panic!("daemon {}: {e}", daemon.name))
    }

    /// [`build_with_buildkit`](Self::build_with_buildkit), returning errors.
    #[expect(clippy::print_stderr, reason = "a test says which builder it used")]
    pub fn try_build_with_buildkit(
        &self,
        daemon: &Daemon,
        buildx: Option<&Buildx>,
        options: &BuildKitOptions,
    ) -> Result<BuildKitImage, Error> {
        if daemon.engine == Engine::Podman {
            eprintln!(
                "daemon {}: Podman has no BuildKit: {} is built by the classic builder instead",
                daemon.name,
                self.tag()
            );
            let image = self.try_build(daemon)?;
            daemon.remove_when_done(&image.id);
            return Ok(BuildKitImage {
                image,
                built_by: BuiltBy::Classic,
                digest: None,
                media_type: None,
            });
        }
        let buildx = buildx.ok_or_else(|| Error::NoBuildx {
            daemon: daemon.name.clone(),
        })?;
        let mut builder = self.clone();
        builder.copy_link = options.link;
        let busybox = builder.busybox_bytes()?;
        let metadata = buildx.config().join(format!(
            "{}.json",
            crate::unique_scratch_name("build-metadata")
        ));
        let mut args: Vec<String> = [
            "build",
            "--builder",
            "default",
            "--progress",
            "plain",
            "--network",
            "none",
            "-t",
            builder.tag(),
        ]
        .map(str::to_owned)
        .to_vec();
        if builder.is_no_cache() {
            args.push("--no-cache".to_owned());
        }
        if let Some(p) = options.provenance {
            args.push(format!("--provenance={p}"));
        }
        if options.sbom {
            args.push("--sbom=true".to_owned());
        }
        match options.output {
            BuildKitOutput::Load => args.push("--load".to_owned()),
            BuildKitOutput::Zstd => args.extend([
                "--output".to_owned(),
                "type=image,compression=zstd,force-compression=true,oci-mediatypes=true".to_owned(),
            ]),
        }
        args.push("--metadata-file".to_owned());
        args.push(metadata.display().to_string());
        args.push("-".to_owned());
        let what = format!("buildx {}", args.join(" "));
        let mut child = buildx
            .command(daemon)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let written = builder.write_context(stdin, busybox.as_deref());
        let out = wait_within(child, BUILD_LIMIT, &what)?;
        if !out.status.success() {
            return Err(Error::DockerFailed {
                args: what,
                status: out.status.to_string(),
                output: tail(&out, 3000),
            });
        }
        written.map_err(Error::Context)?;
        let meta: Value = std::fs::read(&metadata)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&metadata);
        let image = builder.describe(daemon)?;
        daemon.remove_when_done(&image.id);
        Ok(BuildKitImage {
            image,
            built_by: BuiltBy::BuildKit,
            digest: meta["containerimage.digest"].as_str().map(str::to_owned),
            media_type: meta["containerimage.descriptor"]["mediaType"]
                .as_str()
                .map(str::to_owned),
        })
    }
}
