//! `shim-registry`: the crate's registry as a program, for tests that need a
//! registry in another process (or another language).
//!
//! `serve` prints `listening on http://HOST:PORT` (`https://` with TLS) as
//! its first line on stdout, then serves until SIGINT or SIGTERM; logs go to
//! stderr (`RUST_LOG=debug` shows every request).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use shim_registry::auth::Auth;
use shim_registry::seed::{self, ImportOptions};
use shim_registry::storage::{FsStorage, MemoryStorage, Storage};
use shim_registry::{Registry, TlsConfig};

const EXAMPLES: &str = "\
Examples:
  # a throw-away registry in memory on a free port
  shim-registry serve
  # on a fixed port, blobs and manifests kept in a folder
  shim-registry serve --addr 127.0.0.1:5000 --storage /tmp/registry
  # Basic auth with two users; or Bearer tokens from GET/POST /token
  shim-registry serve --user alice:secret --user bob:hunter2
  shim-registry serve --user alice:secret --token
  # HTTPS (and plain HTTP) on one port with a self-signed certificate
  shim-registry serve --tls self-signed
  # content ready at start: a docker save archive and an OCI layout
  docker save busybox:latest -o busybox.tar
  shim-registry serve --seed busybox.tar --seed ./layout=team/app
  # a repository taken out as an OCI image layout
  shim-registry export --storage /tmp/registry --repository team/app --output ./app-layout";

/// An embeddable OCI distribution registry, as a program.
#[derive(Debug, Parser)]
#[command(name = "shim-registry", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a registry until SIGINT or SIGTERM.
    #[command(after_help = EXAMPLES)]
    Serve(Serve),
    /// Write a repository of a storage folder as an OCI image layout (not
    /// while a server uses that folder).
    Export(Export),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Keep blobs, uploads and manifests in this folder (default: memory).
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
    /// A user who may do everything (repeatable); turns on Basic auth.
    #[arg(long = "user", value_name = "NAME:PASSWORD", value_parser = parse_user)]
    users: Vec<(String, String)>,
    /// Bearer tokens from the registry's `/token` endpoint instead of Basic
    /// auth (needs --user).
    #[arg(long, requires = "users")]
    token: bool,
    /// TLS beside plain HTTP on the same port: `off`, `self-signed`, or
    /// `CERT,KEY` (PEM files).
    #[arg(long, value_name = "off|self-signed|CERT,KEY", default_value = "off", value_parser = parse_tls)]
    tls: TlsChoice,
    /// Import an OCI image layout (folder or tar) or a `docker save` archive
    /// before serving (repeatable); `=REPO` puts its images into REPO.
    #[arg(long = "seed", value_name = "PATH[=REPO]")]
    seeds: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct Export {
    /// The storage folder (as given to `serve --storage`).
    #[arg(long, value_name = "DIR")]
    storage: PathBuf,
    /// The repository to write out, with all its tags.
    #[arg(long)]
    repository: String,
    /// The layout folder to make (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
}

#[derive(Debug, Clone)]
enum TlsChoice {
    Off,
    SelfSigned,
    Files { cert: PathBuf, key: PathBuf },
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_owned(), password.to_owned())),
        _ => Err("expected NAME:PASSWORD".to_owned()),
    }
}

fn parse_tls(s: &str) -> Result<TlsChoice, String> {
    match s {
        "off" => Ok(TlsChoice::Off),
        "self-signed" => Ok(TlsChoice::SelfSigned),
        _ => match s.split_once(',') {
            Some((cert, key)) if !cert.is_empty() && !key.is_empty() => Ok(TlsChoice::Files {
                cert: cert.into(),
                key: key.into(),
            }),
            _ => Err("expected off, self-signed or CERT,KEY".to_owned()),
        },
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Export(args) => export(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
    }
}

/// Prints `error: …` with every cause; exit code 1.
fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "shim-registry: error: {}", chain(e));
    ExitCode::FAILURE
}

async fn serve(args: Serve) -> Result<(), Error> {
    let storage: Arc<dyn Storage> = match &args.storage {
        Some(dir) => Arc::new(FsStorage::new(dir)?),
        None => Arc::new(MemoryStorage::new()),
    };
    for spec in &args.seeds {
        let (path, options) = match spec.rsplit_once('=') {
            Some((path, repo)) => (path, ImportOptions::default().repository(repo)),
            None => (spec.as_str(), ImportOptions::default()),
        };
        let report = seed::import(&*storage, path, &options)
            .await
            .map_err(|e| format!("seeding {path}: {}", chain(&e)))?;
        for image in &report.images {
            tracing::info!(
                repository = image.repository,
                tags = ?image.tags,
                digest = %image.digest,
                "seeded image"
            );
        }
    }
    let (tls, scheme) = match &args.tls {
        TlsChoice::Off => (TlsConfig::Disabled, "http"),
        TlsChoice::SelfSigned => (TlsConfig::SelfSigned, "https"),
        TlsChoice::Files { cert, key } => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let config = TlsConfig::Provided {
                cert_chain_pem: read(cert)?,
                key_pem: read(key)?,
            };
            (config, "https")
        }
    };
    let mut auth = if args.token {
        Auth::bearer()
    } else if args.users.is_empty() {
        Auth::none()
    } else {
        Auth::basic()
    };
    for (name, password) in args.users {
        auth = auth.user(name, password);
    }
    let registry = Registry::builder()
        .storage(storage)
        .tls(tls)
        .auth(auth)
        .build()?;
    let handle = registry.spawn(args.addr).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{}", handle.addr())?;
        out.flush()?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    handle.shutdown().await;
    Ok(())
}

async fn export(args: Export) -> Result<(), Error> {
    if !args.storage.is_dir() {
        return Err(format!("{} is not a folder", args.storage.display()).into());
    }
    let storage = FsStorage::new(&args.storage)?;
    let report = seed::export_oci_layout(&storage, &args.repository, &args.output).await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {} ({} tags, {} manifests, {} blobs, {} bytes)",
        args.output.display(),
        report.tags.len(),
        report.manifests,
        report.blobs,
        report.bytes
    )?;
    Ok(())
}

/// An error with its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}
