//! The scenarios, one file each, and the order and header they run under. Each one sets up its
//! own topic, backlog and emulator, starts the connector, and prints its figures beside their
//! goals (docs/performance.md; the soak: docs/reliability.md#soak).

mod ceiling;
mod engine;
mod hot;
mod latency;
mod memory;
mod soak;
mod storm;

use std::time::Instant;

use crate::Options;

/// Runs `opts.scenarios` in the order given; an unknown name stops the run when it is reached.
pub async fn run(opts: &Options) -> anyhow::Result<()> {
    println!(
        "lark-sink bench: broker {}, {} mode, {} cores",
        opts.broker,
        if opts.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for s in &opts.scenarios {
        let started = Instant::now();
        match s.as_str() {
            "ceiling" => ceiling::run(opts).await?,
            "hot" => hot::run(opts).await?,
            "engine" => engine::run(opts).await?,
            "latency" => latency::run(opts).await?,
            "memory" => memory::run(opts).await?,
            "soak" => soak::run(opts).await?,
            "storm" => storm::run(opts).await?,
            other => anyhow::bail!("unknown scenario '{other}'"),
        }
        println!("  ({s} took {:.0} s)\n", started.elapsed().as_secs_f64());
    }
    Ok(())
}
