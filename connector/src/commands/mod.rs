//! The subcommands of the `lark-sink` binary, one module each, apart from the pipeline stages
//! they drive.
//!
//! Each module owns its `#[derive(clap::Args)] struct Args` and an entry point `command(args)`
//! that returns the process's [`std::process::ExitCode`] or the module's own typed error; `main.rs`
//! only parses, sets up logging and dispatches. They live in the library, not the binary, so the
//! tests in `connector/tests/` and `tests/` can call the same code (`demo::run`,
//! `transform_test::run`, `check::run`) that the command line runs.
//!
//! - [`run`]: the connector itself, with the admin server and the in-place restart loop;
//! - [`check`]: the pre-flight connection test (broker, topics, DLQ, Lark app, webhooks);
//! - [`send`]: one message through the delivery path, without Kafka;
//! - [`transform_test`]: the transform chain over JSON-lines records, without Kafka or Lark;
//! - [`demo`]: the whole pipeline, and the way back for a card click, on an embedded broker and
//!   the Lark emulator;
//! - [`emulator`]: the Lark emulator served on its own.

pub mod check;
pub mod demo;
pub mod emulator;
pub mod run;
pub mod send;
pub mod transform_test;
