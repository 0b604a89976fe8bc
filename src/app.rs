//! Subcommand dispatch, kept out of main.rs so it is testable.

use crate::cli::Command;
use crate::daemon::{self, RunOptions};
use std::process::ExitCode;
use std::time::Duration;
use tracing::info;

/// Runs one subcommand to completion.
pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let config = args.resolve()?;
            let opts = RunOptions {
                stats_interval: Duration::from_secs(args.stats_interval),
            };
            daemon::run(config, opts, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let text = crate::config::check_config(&file)?;
            // Validation reads no file; the files the settings name are
            // checked here as the daemon would at start-up.
            let config = crate::config::Config::load_layered(Some(&file), None)?;
            daemon::startup_checks(&config)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::View(args) => crate::view::run(args).await,
        Command::Pair(args) => crate::keys_cli::pair(&args),
        Command::ServePage(args) => {
            crate::web::static_page::command(&args, shutdown_signal()).await
        }
        Command::Keys { action, store } => crate::keys_cli::keys(&action, &store),
        Command::GpioSafe(args) => Ok(crate::control::cdev::gpio_safe_command(
            &args.resolve()?.gpio,
        )),
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            // Without signal handlers the daemon can only be killed; run until then.
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: stopping (again to exit at once)"),
        _ = term.recv() => info!("SIGTERM: stopping (again to exit at once)"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        std::process::exit(130);
    });
}
