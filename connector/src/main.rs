//! The `lark-sink` command line: `run`, `check`, `send`, `demo`, `emulator` and `transform test`
//! (the benchmark is its own binary, `bench/`).
//!
//! This is the binary edge, so errors are `anyhow` here and typed everywhere below. Each
//! subcommand lives in `lark_sink::commands` with its own arguments; this file only parses the
//! command line, sets up logging and the shutdown signal, and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lark_sink::commands;

/// mimalloc instead of glibc malloc: per message the engine allocates requests, JSON and task
/// state on two threads, and glibc's arena consolidation showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lark-sink",
    version,
    about = "Kafka → Lark/Feishu IM sink connector"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector until SIGTERM/SIGINT.
    Run(commands::run::Args),
    /// Test a config before going live: broker, topics, dead-letter topic, app credentials, bot
    /// ability, scopes and webhooks, one line each with the fix for every failure. Delivers
    /// nothing. Exit 0 if nothing failed, 1 if a check failed, 2 if the config itself is invalid.
    Check(commands::check::Args),
    /// Run the whole pipeline on an embedded broker and the Lark emulator, then print a summary.
    Demo(commands::demo::Args),
    /// Send one message with a connector config's app or webhook (no Kafka involved); prints
    /// the message_id, or the classified error and exits 1.
    Send(commands::send::Args),
    /// Serve the Lark Open Platform emulator for your own pipeline tests.
    Emulator(commands::emulator::Args),
    /// Work with the transform chain of a connector config.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
}

impl Command {
    /// The log filter when `LARK_SINK_LOG` is unset: each command's output is its own, so the
    /// one-shot commands keep the logs quiet.
    fn default_log(&self) -> &'static str {
        match self {
            Command::Run(_) => "info,librdkafka=warn,rdkafka=warn",
            // librdkafka's reasons are captured and reported per check, not logged.
            Command::Check(_) => "error,librdkafka=off,rdkafka=off",
            Command::Demo(_) => "error",
            Command::Send(_) => "warn,librdkafka=warn,rdkafka=warn",
            Command::Emulator(_) | Command::Transform { .. } => "info",
        }
    }
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run the configured transforms over JSON-lines records and show the envelopes they produce,
    /// their validation, and every error. No Kafka or Lark needed. Exit code 1 if any record fails.
    Test(commands::transform_test::Args),
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LARK_SINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on the first SIGTERM/SIGINT; a second signal exits at once (the uuid makes the
/// replay of whatever was in flight safe).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested: finishing records in flight (signal again to exit now)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.command.default_log());
    Ok(match cli.command {
        Command::Run(args) => commands::run::command(args, shutdown_signal()).await?,
        Command::Check(args) => commands::check::command(args).await,
        Command::Demo(args) => commands::demo::command(args).await?,
        Command::Send(args) => commands::send::command(args).await?,
        Command::Emulator(args) => commands::emulator::command(args, shutdown_signal()).await?,
        Command::Transform {
            command: TransformCommand::Test(args),
        } => commands::transform_test::command(args)?,
    })
}
