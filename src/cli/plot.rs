//! `colossus plot RUN_DIR [--out PNG]`: draw a run's metrics.jsonl (see `crate::plot`).

use super::PlotArgs;
use crate::error::{Error, Result};

pub fn run(args: PlotArgs) -> Result<()> {
    // The image is always a PNG: a file named `.svg` or `.jpg` holding one would mislead.
    if let Some(out) = &args.out
        && let Some(ext) = out.extension()
        && !ext.eq_ignore_ascii_case("png")
    {
        return Err(Error::Flag {
            flag: format!("--out {}", out.display()),
            msg: "plot writes a PNG image; name the file .png".into(),
        });
    }
    let out = crate::plot::plot(&args.run_dir, args.out.as_deref())?;
    println!("wrote {}", out.display());
    Ok(())
}
