//! `gigafab bench`: the twin's speed benchmarks.

use anyhow::Result;
use clap::Args;

/// Benchmark options.
#[derive(Args)]
pub struct BenchArgs {}

pub fn run(_a: BenchArgs) -> Result<()> {
    Ok(())
}
