//! The command line: `shipgate run`, `config check`, `version` and `demo`.
//!
//! Every command exits 0 on success and non-zero with a one-line reason (per problem, for
//! `config check`) on failure: 1 for a runtime failure, 2 for a configuration that does not load.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{Daemon, Options};
use crate::store::Durability;

/// The environment variable that switches flushing off. It exists only so the crash test can
/// show that it finds losses without flushing; never set it in production.
pub const UNSAFE_NO_FLUSH_ENV: &str = "SHIPGATE_UNSAFE_NO_FLUSH";

#[derive(Debug, Parser)]
#[command(
    name = "shipgate",
    version,
    about = "Fulfils Shopify orders only after the carrier has the parcel and a physical check is recorded"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// The configuration file.
        #[arg(
            long,
            env = "SHIPGATE_CONFIG",
            default_value = "/etc/shipgate/shipgate.toml"
        )]
        config: PathBuf,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the self-contained sandbox demo on loopback and check every outcome.
    Demo,
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: list every problem with its key, exit non-zero if any.
    Check {
        /// The configuration file.
        #[arg(
            long,
            env = "SHIPGATE_CONFIG",
            default_value = "/etc/shipgate/shipgate.toml"
        )]
        config: PathBuf,
    },
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("shipgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&config),
        Command::Run { config } => run(&config),
        Command::Demo => match runtime().and_then(|rt| rt.block_on(crate::demo::run())) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => fail(&format!("demo failed: {e:#}")),
        },
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("shipgate: {reason}");
    ExitCode::from(1)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("shipgate: warning: {warning}");
            }
            Ok(loaded.config)
        }
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("shipgate: {}: {problem}", path.display());
            }
            Err(ExitCode::from(2))
        }
    }
}

fn config_check(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} shop{})",
                path.display(),
                config.shops.len(),
                if config.shops.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(&config.log.format, &config.log.level);
    let durability = if std::env::var_os(UNSAFE_NO_FLUSH_ENV).is_some_and(|v| v == "1") {
        Durability::UnsafeNoFlush
    } else {
        Durability::Flush
    };
    let options = Options {
        durability,
        ..Options::default()
    };
    let result = runtime().and_then(|rt| rt.block_on(run_until_signal(&config, options)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

async fn run_until_signal(config: &Config, options: Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Install the handlers before announcing readiness, so a stop sent right after is not lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let daemon = Daemon::start(config, options).await?;
    crate::health::notify_ready();
    // One line on stdout that scripts and tests read to find the bound ports.
    println!(
        "shipgate ready public={} admin={}",
        daemon.public_addr(),
        daemon.admin_addr()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    daemon.stop().await
}
