//! dlgrab: export single layers of a local Docker image, verified, in the
//! original DLGrab's layout, an OCI layout or a registry's storage layout.
//!
//! This binary only wires the workspace's components together: it resolves
//! layers with `docker-driver`, receives them through an in-process
//! `shim-registry` (or a `docker save` stream, when that is cheaper), and
//! writes them with `layer-writer`. See ARCHITECTURE.md.

mod cleanup;
mod cli;
mod copy;
mod delta;
mod export;
mod fault;
mod generate;
mod interrupt;
mod list;
mod manifest;
mod names_lock;
mod plan;
mod plugin;
mod report;
mod route;
mod sweep;
mod temp_names;
mod watchdog;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::FromArgMatches;
use docker_driver::{BollardDriver, DaemonSelection, DockerDriver};

use crate::cleanup::Cleanup;
use crate::cli::Args;
use crate::delta::Done;
use crate::export::ExportOptions;
use crate::report::Reporter;

fn main() -> ExitCode {
    let (args, docker) = match parse_args() {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(&e),
    };
    if let Some(what) = args.generate {
        return match generate::write(what, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    init_tracing(args.debug);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let code = match runtime.block_on(run(args, docker)) {
        Ok(code) => code,
        // The reader of `-o -` went away (`dlgrab IMAGE -o - | head`):
        // cleanup has run; end as a process killed by SIGPIPE would.
        Err(e) if is_broken_pipe(&e) => {
            tracing::debug!(error = %format!("{e:#}"), "stdout closed by its reader");
            ExitCode::from(BROKEN_PIPE)
        }
        Err(e) => fail(&e),
    };
    // Lets the writer's blocking tasks notice a cancellation and remove
    // their temporary files before the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    code
}

/// Exit code when stdout's reader closed it early, as shells report a
/// SIGPIPE death (128 + 13).
const BROKEN_PIPE: u8 = 141;

/// Whether `error` comes from writing to a pipe nobody reads any more.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The arguments, of plain `dlgrab` or of the `docker dlgrab` plugin, with
/// the Docker CLI's global options given before `dlgrab`; `None` once the
/// plugin's metadata is printed. Exits on a usage error, as clap does.
fn parse_args() -> anyhow::Result<Option<(Args, DaemonSelection)>> {
    match plugin::invocation(std::env::args_os().collect())? {
        plugin::Invocation::Metadata => {
            writeln!(std::io::stdout(), "{}", plugin::metadata())?;
            Ok(None)
        }
        plugin::Invocation::Run {
            plugin,
            args,
            docker,
        } => {
            let mut command = cli::command();
            if plugin {
                command = command.bin_name("docker dlgrab");
            }
            let argv = std::iter::once(OsString::from("dlgrab")).chain(args);
            let matches = command.get_matches_from(argv);
            let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
            Ok(Some((args, docker)))
        }
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "dlgrab: error: {error:#}");
    ExitCode::FAILURE
}

fn init_tracing(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "dlgrab=debug,shim_registry=debug,docker_driver=debug,layer_writer=debug"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn run(args: Args, docker: DaemonSelection) -> anyhow::Result<ExitCode> {
    // Flag combinations are refused before the daemon is asked anything.
    let sweep_only = args.clean && args.layers.is_empty() && args.list.is_none();
    let target = if args.list.is_some() || sweep_only {
        delta::Target::Folder
    } else {
        delta::target_for(&delta::Asked {
            images: &args.layers,
            since: args.since.as_deref(),
            output: &args.outdir,
            json: args.json,
            format: args.format(),
        })?
    };
    for what in args.layers.iter().chain(&args.list).chain(&args.since) {
        docker_driver::check_typed(what)?;
    }
    let driver: Arc<dyn DockerDriver> = match &args.data_root {
        Some(root) => route::store::offline_driver(root)?,
        None => Arc::new(connect(&args, docker).await?),
    };
    let driver: Arc<dyn DockerDriver> = match args.timeout {
        0 => driver,
        secs => Arc::new(watchdog::Watchdog::new(
            driver,
            std::time::Duration::from_secs(secs),
        )),
    };

    if let Some(image) = &args.list {
        let details = driver.inspect_image(image).await?;
        if let Some(platform) = &args.platform {
            plan::check_platform(image, &details, platform)?;
        }
        list::print(
            &list::rows(&details),
            args.json,
            &mut std::io::stdout().lock(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    if sweep_only {
        return clean(driver.as_ref(), &args).await;
    }

    let reporter = Arc::new(Reporter::new(
        args.quiet,
        args.json || args.stdout_is_data(),
    ));
    if args.data_root.is_none() {
        let swept = sweep::sweep(driver.as_ref(), swept_folder(&args).as_deref()).await;
        for line in swept.lines() {
            reporter.message(line);
        }
    }
    let cleanup = Arc::new(Cleanup::new(driver.clone()));
    let options = ExportOptions {
        outdir: args.outdir.clone(),
        format: args.format(),
        port: args.port,
        via: args.via(),
        replace: args.force,
        platform: args.platform.clone(),
    };
    if let Some(dest) = &args.to {
        let (layers, json) = (&args.layers, args.json);
        return copy::main(dest, driver, cleanup, reporter, options, layers, json).await;
    }
    let export = delta::run(
        target,
        driver,
        cleanup.clone(),
        reporter.clone(),
        options,
        &args.layers,
        args.selector(),
    );
    match interrupt::run_to_end(export, &cleanup, &reporter).await {
        None => Ok(interrupt::exit(
            "push stopped, temporary tags removed",
            Some(&args.outdir),
            &cleanup,
        )),
        Some(Err(e)) => Err(e),
        Some(Ok(done)) => {
            if args.json {
                let mut out = std::io::stdout().lock();
                match &done {
                    Done::Layers(exported) => serde_json::to_writer_pretty(&mut out, exported)?,
                    Done::Delta(delta) => serde_json::to_writer_pretty(&mut out, delta)?,
                    Done::Streamed => {}
                }
                writeln!(out)?;
            }
            reporter.message("Export complete");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The folder whose dead runs' scratch entries a run sweeps: the output
/// folder, or the folder of the `--since` archive; none for stdout.
fn swept_folder(args: &Args) -> Option<std::path::PathBuf> {
    if args.stdout_is_data() {
        return None;
    }
    if args.since.is_some() {
        let parent = args.outdir.parent().unwrap_or(std::path::Path::new("."));
        return Some(if parent.as_os_str().is_empty() {
            ".".into()
        } else {
            parent.to_path_buf()
        });
    }
    Some(args.outdir.clone())
}

/// `dlgrab --clean` with no LAYER: sweeps the daemon and the -o folder and
/// reports what it removed and what it left.
async fn clean(driver: &dyn DockerDriver, args: &Args) -> anyhow::Result<ExitCode> {
    let folder = (!args.stdout_is_data()).then(|| args.outdir.clone());
    let swept = sweep::sweep(driver, folder.as_deref()).await;
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &swept)?;
        writeln!(out)?;
    } else if !args.quiet {
        let mut out = std::io::stdout().lock();
        for line in swept.lines() {
            writeln!(out, "{line}")?;
        }
        if swept.is_empty() {
            writeln!(out, "nothing to clean: no leftovers of dead dlgrab runs")?;
        }
    }
    Ok(if swept.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Connects to the daemon the Docker CLI would use: `--context` beats a
/// context given to `docker` before `dlgrab`, then as [`DaemonSelection`]
/// says.
async fn connect(args: &Args, docker: DaemonSelection) -> anyhow::Result<BollardDriver> {
    let selection = DaemonSelection {
        context: args.context.clone().or(docker.context),
        ..docker
    };
    let daemon = selection
        .resolve()
        .context("cannot tell which Docker daemon to use")?;
    tracing::debug!(context = %daemon.context, host = %daemon.host, "docker daemon chosen");
    let driver = BollardDriver::connect_to(&daemon)
        .await
        .map_err(|e| not_connected(&daemon, e))?;
    Ok(match &args.platform {
        Some(platform) => driver.selecting_platform(platform.clone()),
        None => driver,
    })
}

/// The error of a failed connection to `daemon`: its address, what chose
/// it, the cause in plain words, and what to try.
fn not_connected(
    daemon: &docker_driver::DaemonEndpoint,
    error: docker_driver::DriverError,
) -> anyhow::Error {
    use docker_driver::DriverError;
    let (host, chosen) = (&daemon.host, &daemon.chosen_by);
    let cause = |e: &(dyn std::error::Error + 'static)| {
        let mut cause = Some(e);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::NotFound => "no such socket".to_owned(),
                    std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                    _ => io.to_string(),
                };
            }
            cause = e.source();
        }
        e.to_string()
    };
    match error {
        DriverError::Unreachable { source, .. } => anyhow::anyhow!(
            "cannot connect to the Docker daemon at {host} ({chosen}): {}.\nIs dockerd running there? {}",
            cause(&*source),
            chosen.how_to_change()
        ),
        DriverError::PermissionDenied { .. } => anyhow::anyhow!(
            "permission denied on the Docker daemon's socket {host} ({chosen}).\nRun dlgrab as root, or as a member of the socket's group (often `docker`). {}",
            chosen.how_to_change()
        ),
        other => anyhow::Error::new(other)
            .context(format!("cannot use the Docker daemon at {host} ({chosen})")),
    }
}
