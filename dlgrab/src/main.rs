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
mod failure;
mod fault;
mod generate;
mod interrupt;
mod json;
mod list;
mod manifest;
mod names_lock;
mod plan;
mod plugin;
mod read_ahead;
mod report;
mod route;
mod sweep;
mod temp_names;
mod watchdog;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

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
    let (mode, json) = (mode_of(&args), args.json);
    let destination = args.to.clone();
    let started = Instant::now();
    let (code, document) = match runtime.block_on(run(args, docker)) {
        Ok(ran) => {
            for failure in ran.items.iter().filter_map(|i| i.error.as_ref()) {
                let _ = writeln!(std::io::stderr(), "dlgrab: error: {failure}");
            }
            let seconds = started.elapsed().as_secs_f64();
            if ran.interrupted {
                let failure = json::Failure {
                    kind: json::Kind::Interrupted,
                    message: "interrupted by a signal".to_owned(),
                };
                let document =
                    json::Document::stopped(mode, failure, ran.items, ran.totals, seconds);
                (ExitCode::from(interrupt::INTERRUPTED), document)
            } else {
                let document = json::Document::finished(mode, ran.items, ran.totals, seconds);
                let code = if document.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
                (code, document)
            }
        }
        // The reader of `-o -` went away (`dlgrab IMAGE -o - | head`):
        // cleanup has run; end as a process killed by SIGPIPE would.
        Err(e) if is_broken_pipe(&e) => {
            tracing::debug!(error = %format!("{e:#}"), "stdout closed by its reader");
            return ExitCode::from(BROKEN_PIPE);
        }
        Err(e) => {
            let totals = match (mode, destination) {
                (json::Mode::Copy, Some(destination)) => json::Totals::Copy(json::CopyTotals {
                    destination,
                    ..json::CopyTotals::default()
                }),
                _ => json::Totals::None,
            };
            let seconds = started.elapsed().as_secs_f64();
            let failure = json::Failure::of(&e);
            let document = json::Document::stopped(mode, failure, Vec::new(), totals, seconds);
            (fail(&e), document)
        }
    };
    if json && let Err(e) = document.write(&mut std::io::stdout().lock()) {
        tracing::debug!("cannot write the --json document: {e}");
    }
    // Lets the writer's blocking tasks notice a cancellation and remove
    // their temporary files before the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    code
}

/// What `--json` says the run did, read off the command line.
fn mode_of(args: &Args) -> json::Mode {
    if args.list.is_some() {
        json::Mode::List
    } else if args.clean && args.layers.is_empty() {
        json::Mode::Clean
    } else if args.to.is_some() {
        json::Mode::Copy
    } else if args.since.is_some() {
        json::Mode::Since
    } else {
        json::Mode::Export
    }
}

/// What a run did, for its exit status and the `--json` document.
struct Ran {
    /// Per reference as typed (per leftover for `--clean`).
    items: Vec<json::Item>,
    totals: json::Totals,
    /// Ctrl-C or SIGTERM stopped it (what was undone is said on stderr).
    interrupted: bool,
}

impl Ran {
    fn items(items: Vec<json::Item>) -> Self {
        Self {
            items,
            totals: json::Totals::None,
            interrupted: false,
        }
    }

    fn interrupted(totals: json::Totals) -> Self {
        Self {
            items: Vec::new(),
            totals,
            interrupted: true,
        }
    }
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
    let _ = writeln!(
        std::io::stderr(),
        "dlgrab: error: {}",
        failure::user_message(error)
    );
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
        .with_ansi(colours_on_stderr())
        .with_target(false)
        .init();
}

/// Whether `--debug` may colour stderr: a terminal, and no `NO_COLOR`.
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `-o -` writes a tar: never to a terminal, where it would be garbage.
fn refuse_terminal_stdout(args: &Args) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    anyhow::ensure!(
        !(args.stdout_is_data() && std::io::stdout().is_terminal()),
        "-o - writes a tar to stdout, which is a terminal here: pipe it (`dlgrab IMAGE -o - | tar -t`) or redirect it (`> layer.tar`)"
    );
    Ok(())
}

async fn run(args: Args, docker: DaemonSelection) -> anyhow::Result<Ran> {
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
        })
        .map_err(|e| json::Kind::BadArguments.tag(e))?
    };
    refuse_terminal_stdout(&args).map_err(|e| json::Kind::BadArguments.tag(e))?;
    // With several references (into a folder, or --to) a bad one is an
    // item that failed; the others go on.
    let keep_going = args.to.is_some() || target == delta::Target::Folder;
    let mut refused = Vec::new();
    for what in args.list.iter().chain(&args.since) {
        docker_driver::check_typed(what)?;
    }
    for (i, what) in args.layers.iter().enumerate() {
        match docker_driver::check_typed(what) {
            Ok(()) => {}
            Err(e) if keep_going => refused.push((i, json::Failure::of(&e.into()))),
            Err(e) => return Err(e.into()),
        }
    }
    let references: Vec<String> = args
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, what)| what.clone())
        .collect();
    if !args.layers.is_empty() && references.is_empty() {
        return Ok(Ran {
            items: in_typed_order(&args.layers, refused, Vec::new()),
            totals: match &args.to {
                Some(destination) => json::Totals::Copy(json::CopyTotals {
                    destination: destination.clone(),
                    ..json::CopyTotals::default()
                }),
                None => json::Totals::None,
            },
            interrupted: false,
        });
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
        let rows = list::rows(&details);
        if !args.json {
            list::print(&rows, &mut std::io::stdout().lock())?;
        }
        let items = rows
            .into_iter()
            .map(|row| json::Item::listed(image, row))
            .collect();
        return Ok(Ran::items(items));
    }

    if sweep_only {
        return clean(driver.as_ref(), &args).await.map(Ran::items);
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
        let report = copy::main(dest, driver, cleanup, reporter, options, &references).await?;
        let Some(report) = report else {
            return Ok(Ran::interrupted(json::Totals::Copy(json::CopyTotals {
                destination: dest.clone(),
                ..json::CopyTotals::default()
            })));
        };
        let items = report
            .images
            .into_iter()
            .map(|(image, copied)| match copied {
                Ok(copied) => json::Item::copied(copied),
                Err(failure) => json::Item::failed(&image, failure, None),
            })
            .collect();
        return Ok(Ran {
            items: in_typed_order(&args.layers, refused, items),
            totals: json::Totals::Copy(report.totals),
            interrupted: false,
        });
    }
    let export = delta::run(
        target,
        driver,
        cleanup.clone(),
        reporter.clone(),
        options,
        &references,
        args.selector(),
    );
    match interrupt::run_to_end(export, &cleanup, &reporter).await {
        None => {
            interrupt::exit(
                "push stopped, temporary tags removed",
                Some(&args.outdir),
                &cleanup,
            );
            Ok(Ran::interrupted(json::Totals::None))
        }
        Some(Err(e)) => Err(e),
        Some(Ok(done)) => {
            let ran = match done {
                Done::Layers(attempts) => {
                    let items = attempts
                        .into_iter()
                        .map(|a| match a.outcome {
                            Ok(layer) => json::Item::layer(
                                &a.reference,
                                json::Action::Exported,
                                layer,
                                a.seconds,
                            ),
                            Err(failure) => {
                                json::Item::failed(&a.reference, failure, Some(a.seconds))
                            }
                        })
                        .collect();
                    Ran::items(in_typed_order(&args.layers, refused, items))
                }
                Done::Streamed => Ran::items(Vec::new()),
                Done::Delta(delta) => {
                    let delta = *delta;
                    let items = delta
                        .layers
                        .into_iter()
                        .map(|layer| {
                            json::Item::layer(
                                &delta.image,
                                json::Action::Archived,
                                layer,
                                delta.seconds,
                            )
                        })
                        .collect();
                    Ran {
                        items,
                        totals: json::Totals::Since(json::SinceTotals {
                            base: delta.base,
                            image: delta.image,
                            image_id: delta.image_id,
                            shared_layers: delta.shared_layers,
                            archive: delta.archive,
                            size: delta.size,
                        }),
                        interrupted: false,
                    }
                }
            };
            if ran.items.iter().all(|i| i.error.is_none()) {
                reporter.message("Export complete");
            }
            Ok(ran)
        }
    }
}

/// The items of `typed` (the references as typed) in their order: those
/// `refused` before the daemon was asked (by position), then `done`'s in
/// turn for the others.
fn in_typed_order(
    typed: &[String],
    refused: Vec<(usize, json::Failure)>,
    done: Vec<json::Item>,
) -> Vec<json::Item> {
    let mut refused = refused.into_iter().peekable();
    let mut done = done.into_iter();
    let mut items = Vec::new();
    for (i, what) in typed.iter().enumerate() {
        if refused.peek().is_some_and(|(r, _)| *r == i) {
            if let Some((_, failure)) = refused.next() {
                items.push(json::Item::failed(what, failure, None));
            }
        } else if let Some(item) = done.next() {
            items.push(item);
        }
    }
    items
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
/// reports what it removed and what it left (an item each).
async fn clean(driver: &dyn DockerDriver, args: &Args) -> anyhow::Result<Vec<json::Item>> {
    let folder = (!args.stdout_is_data()).then(|| args.outdir.clone());
    let swept = sweep::sweep(driver, folder.as_deref()).await;
    if !args.json && !args.quiet {
        let mut out = std::io::stdout().lock();
        for line in swept.lines() {
            writeln!(out, "{line}")?;
        }
        if swept.is_empty() {
            writeln!(out, "nothing to clean: no leftovers of dead dlgrab runs")?;
        }
    }
    Ok(json::swept_items(&swept))
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
    let cause = failure::connection_cause;
    match error {
        DriverError::Unreachable { source, .. } => json::Kind::DaemonUnreachable.error(format!(
            "cannot connect to the Docker daemon at {host} ({chosen}): {}.\nIs dockerd running there? {}",
            cause(&*source),
            chosen.how_to_change()
        )),
        DriverError::PermissionDenied { .. } => json::Kind::PermissionDenied.error(format!(
            "permission denied on the Docker daemon's socket {host} ({chosen}).\nRun dlgrab as root, or as a member of the socket's group (often `docker`). {}",
            chosen.how_to_change()
        )),
        other => anyhow::Error::new(other)
            .context(format!("cannot use the Docker daemon at {host} ({chosen})")),
    }
}
