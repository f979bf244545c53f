//! `colossus params CONFIG`: parameter counts from the config alone (no allocation), so even the
//! 316B Grok-1 shape can be sized on a laptop.

use super::ConfigArgs;
use crate::config;
use crate::error::Result;
use crate::model::params::{count, train_flops_per_token};

pub fn run(args: ConfigArgs) -> Result<()> {
    let cfg = config::load(&args.config, &args.set)?;
    let m = &cfg.model;
    let p = count(m);
    let human = |n: u64| {
        let n = n as f64;
        if n >= 1e9 {
            format!("{:.2}B", n / 1e9)
        } else {
            format!("{:.2}M", n / 1e6)
        }
    };
    println!("{} (preset {})", cfg.run_name, cfg.preset.name());
    println!("  shape: {}", m.shape_line());
    println!("  total parameters:  {:>16} ({})", p.total, human(p.total));
    println!("  active per token:  {:>16} ({})", p.active, human(p.active));
    println!(
        "  of which: embedding {}, attention {}, router {}, experts {}, norms {}",
        human(p.embedding),
        human(p.attention),
        human(p.router),
        human(p.experts),
        human(p.norms)
    );
    println!(
        "  training FLOPs per token at seq {}: {:.3e}",
        cfg.data.seq_len,
        train_flops_per_token(m, cfg.data.seq_len)
    );
    Ok(())
}
