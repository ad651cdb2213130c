//! Serves a registry until killed.
//!
//! `cargo run -p shim-registry --example serve -- [--addr 127.0.0.1:PORT] [--storage DIR] [--no-tls]`
//!
//! Prints `listening on http://127.0.0.1:PORT` as its first line on stdout;
//! logs go to stderr (`RUST_LOG=debug` for every request).
#![expect(
    clippy::print_stderr,
    reason = "an example binary reports usage errors"
)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use shim_registry::storage::FsStorage;
use shim_registry::{Registry, TlsConfig};

fn usage() -> ! {
    eprintln!("usage: serve [--addr 127.0.0.1:PORT] [--storage DIR] [--no-tls]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
    let mut storage = None;
    let mut tls = TlsConfig::SelfSigned;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().unwrap_or_else(|| usage()).parse()?,
            "--storage" => storage = Some(args.next().unwrap_or_else(|| usage())),
            "--no-tls" => tls = TlsConfig::Disabled,
            _ => usage(),
        }
    }
    let mut builder = Registry::builder().tls(tls);
    if let Some(dir) = storage {
        builder = builder.storage(Arc::new(FsStorage::new(dir)?));
    }
    let handle = builder.build()?.spawn(addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", handle.url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
