//! The `plume` binary: parse the command line, set up logging, run the subcommand until it ends or
//! a shutdown signal arrives.

use std::process::ExitCode;

use clap::Parser;
use plume::commands::{partitions, sql_access, tokens};
use plume::config::{Cli, Command, OutboxCommand, PartitionsCommand, SqlAccessCommand, TokensCommand};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    plume::init_tracing(cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let result = match cli.command {
        Command::Serve(args) => plume::commands::serve(*args, shutdown).await,
        Command::Migrate(args) => plume::commands::migrate(args).await,
        Command::Seed(args) => plume::commands::seed(args).await,
        Command::Relay(args) => plume::commands::relay(args, shutdown).await,
        Command::Outbox(OutboxCommand::Status(args)) => plume::commands::outbox_status(args).await,
        Command::Outbox(OutboxCommand::RetryDead(args)) => plume::commands::outbox_retry_dead(args).await,
        Command::Partitions(command) => match command {
            PartitionsCommand::Status(args) => partitions::status(args).await,
            PartitionsCommand::Maintain(args) => partitions::maintain(args).await,
            PartitionsCommand::RepairDefault(args) => partitions::repair_default(args).await,
            PartitionsCommand::Retention(args) => partitions::retention(args).await,
        },
        Command::Verify(args) => partitions::verify(args).await,
        Command::Tokens(command) => match command {
            TokensCommand::Create(args) => tokens::create(args).await,
            TokensCommand::List(args) => tokens::list(args).await,
            TokensCommand::Revoke(args) => tokens::revoke(args).await,
            TokensCommand::Rotate(args) => tokens::rotate(args).await,
            TokensCommand::Audit(args) => tokens::audit(args).await,
        },
        Command::SqlAccess(command) => match command {
            SqlAccessCommand::Grant(args) => sql_access::grant(args).await,
            SqlAccessCommand::Revoke(args) => sql_access::revoke(args).await,
            SqlAccessCommand::List(args) => sql_access::list(args).await,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once, with its causes, in the log format asked for.
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
