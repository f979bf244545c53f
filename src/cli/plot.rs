//! `colossus plot RUN_DIR [--out PNG]`: draw a run's metrics.jsonl (see `crate::plot`).

use super::PlotArgs;
use crate::error::Result;

pub fn run(args: PlotArgs) -> Result<()> {
    let out = crate::plot::plot(&args.run_dir, args.out.as_deref())?;
    println!("wrote {}", out.display());
    Ok(())
}
