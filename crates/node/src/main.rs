//! `gyre`: runs one node. See `conf/gyre.toml` for every setting.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gyre_node::{NodeConfig, Overrides};

/// mimalloc: under load glibc malloc spent about a tenth of the node's CPU
/// maintaining its free lists (`perf record` of a 3-node write load).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "gyre", version, about = "A Gyre database node")]
struct Cli {
    /// Configuration file; defaults to conf/gyre.toml when it exists.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the effective configuration (TOML) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gyre: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let default = PathBuf::from("conf/gyre.toml");
    let path = cli.config.or_else(|| default.exists().then_some(default));
    let cfg = NodeConfig::resolve(path.as_deref(), &cli.overrides)?;
    if cli.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(());
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(v).context("RUST_LOG is not a valid filter")?
        }
        _ => tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
            .context("log.level is not a valid filter")?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(config = ?path, version = env!("CARGO_PKG_VERSION"), "starting gyre");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let signal = async {
            if let Err(e) = gyre_node::shutdown_signal().await {
                tracing::error!(error = %e, "cannot listen for signals; stopping");
            }
        };
        gyre_node::run(cfg, signal).await
    })?;
    Ok(())
}
