//! `colossus plan CONFIG --gpus N --gpu h100|h200|b200`: sizes a training run of the config's
//! model on a GPU cluster without allocating anything: parameters and FLOPs, memory per GPU under
//! a parallel layout and whether it fits, communication per step, time, tokens per day and power.
//!
//! The computation is pure functions returning structs (`layout`, `memory`, `comm`, `schedule`,
//! `search`); `report` only prints. docs/plan.md explains every formula and table.

pub mod comm;
pub mod hardware;
pub mod layout;
pub mod memory;
pub mod report;
pub mod schedule;
pub mod search;

#[cfg(test)]
mod fixtures;

use std::path::PathBuf;

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::model::GrokConfig;
use crate::model::params::{ParamCount, count};
use comm::Comm;
use hardware::Gpu;
use layout::{BatchSpec, Layout, Recompute, Scenario};
use memory::Memory;
use schedule::Throughput;
use search::Suggestion;

/// Tokens to train on when `--tokens` is absent: 20 per parameter, the compute-optimal ratio of
/// Hoffmann et al. (2022, "Chinchilla") applied to the total parameter count.
pub const DEFAULT_TOKENS_PER_PARAM: f64 = 20.0;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Path to the YAML config, e.g. configs/grok-1.yaml.
    pub config: PathBuf,
    /// Override one config key, e.g. `--set data.seq_len=4096` (repeatable; applied in order).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub set: Vec<String>,
    /// Number of GPUs.
    #[arg(long)]
    pub gpus: usize,
    /// GPU model: h100, h200 or b200 (SXM parts, 8 per node).
    #[arg(long)]
    pub gpu: String,
    /// Tokens to train on, e.g. 10T, 300B, 1.5e12 [default: 20 per parameter].
    #[arg(long)]
    pub tokens: Option<String>,
    /// Model FLOP utilisation assumed for the time estimates, in (0, 1].
    #[arg(long, default_value_t = 0.4)]
    pub mfu: f64,
    /// Data-parallel degree [default: GPUs / (tp · pp)]. With no layout flag the planner picks the
    /// smallest tp × pp that fits.
    #[arg(long)]
    pub dp: Option<usize>,
    /// Tensor-parallel degree (attention heads, expert ffn, vocabulary) [default: 1].
    #[arg(long)]
    pub tp: Option<usize>,
    /// Pipeline stages [default: 1].
    #[arg(long)]
    pub pp: Option<usize>,
    /// Expert-parallel degree inside the data-parallel group [default: 1].
    #[arg(long)]
    pub ep: Option<usize>,
    /// Full activation recomputation: keep only each layer's input.
    #[arg(long)]
    pub recompute: bool,
    /// Selective recomputation: recompute only the attention scores and softmax.
    #[arg(long)]
    pub selective_recompute: bool,
    /// Shard the optimizer state over the data-parallel ranks (ZeRO stage 1).
    #[arg(long)]
    pub zero1: bool,
    /// Sequences per micro-batch [default: train.micro_batch].
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Global batch in tokens, e.g. 16M [default: train.micro_batch × train.grad_accum × dp ×
    /// data.seq_len].
    #[arg(long)]
    pub global_batch_tokens: Option<String>,
}

impl PlanArgs {
    /// The arguments with every optional flag absent (what tests and callers start from).
    pub fn new(config: impl Into<PathBuf>, gpus: usize, gpu: &str) -> PlanArgs {
        PlanArgs {
            config: config.into(),
            set: Vec::new(),
            gpus,
            gpu: gpu.to_string(),
            tokens: None,
            mfu: 0.4,
            dp: None,
            tp: None,
            pp: None,
            ep: None,
            recompute: false,
            selective_recompute: false,
            zero1: false,
            micro_batch: None,
            global_batch_tokens: None,
        }
    }
}

/// Everything `colossus plan` prints, computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub run_name: String,
    pub preset: &'static str,
    pub model: GrokConfig,
    pub params: ParamCount,
    pub scenario: Scenario,
    pub memory: Memory,
    pub comm: Comm,
    pub time: Throughput,
    /// Empty when the plan fits.
    pub suggestions: Vec<Suggestion>,
}

impl Plan {
    pub fn new(cfg: &Config, scenario: Scenario) -> Plan {
        let m = &cfg.model;
        Plan {
            run_name: cfg.run_name.clone(),
            preset: cfg.preset.name(),
            model: m.clone(),
            params: count(m),
            memory: memory::memory(m, &scenario),
            comm: comm::comm(m, &scenario, &scenario.gpu.spec()),
            time: schedule::throughput(m, &scenario),
            suggestions: search::suggestions(m, &scenario),
            scenario,
        }
    }
}

/// Load the config, check the flags, compute the plan and print it.
pub fn run(args: PlanArgs) -> Result<()> {
    print!("{}", plan(&args)?);
    Ok(())
}

/// Load the config and compute the plan the flags describe.
pub fn plan(args: &PlanArgs) -> Result<Plan> {
    let cfg = config::load(&args.config, &args.set)?;
    let scenario = scenario(args, &cfg)?;
    Ok(Plan::new(&cfg, scenario))
}

fn flag_err(flag: &str, msg: impl Into<String>) -> Error {
    Error::Flag {
        flag: flag.to_string(),
        msg: msg.into(),
    }
}

/// The most GPUs a plan sizes.
pub const MAX_GPUS: usize = 1 << 30;

/// The most tokens `--tokens` takes: 10⁴ times the ~10¹⁴ of the largest runs published (`1e308`
/// printed a 309-digit token count and "inf days").
pub const MAX_TOKENS: f64 = 1e18;

/// The most tokens `--global-batch-tokens` takes: 6·10⁷ times Llama 3 405B's 16M-token batch
/// (`report::LARGE_BATCH_TOKENS`); it bounds the micro-batches per step the plan counts in integers.
pub const MAX_BATCH_TOKENS: f64 = 1e15;

/// Check the flags against each other and the config and resolve them into a `Scenario`.
pub fn scenario(args: &PlanArgs, cfg: &Config) -> Result<Scenario> {
    let m = &cfg.model;
    if args.gpus == 0 {
        return Err(flag_err("--gpus", "must be at least 1"));
    }
    // The layout search divides the count by trial division; past 2^30 (a thousand times the
    // largest cluster built) that overflowed and panicked.
    if args.gpus > MAX_GPUS {
        return Err(flag_err(
            "--gpus",
            format!("{} is more than {MAX_GPUS} (2^30)", args.gpus),
        ));
    }
    let gpu = Gpu::parse(&args.gpu).ok_or_else(|| {
        flag_err(
            "--gpu",
            format!("unknown GPU `{}`; expected h100, h200 or b200", args.gpu),
        )
    })?;
    if !(args.mfu.is_finite() && args.mfu > 0.0 && args.mfu <= 1.0) {
        return Err(flag_err(
            "--mfu",
            format!("{} must be in (0, 1], e.g. 0.4", crate::say::num(args.mfu)),
        ));
    }
    let micro_batch = args.micro_batch.unwrap_or(cfg.train.micro_batch);
    if micro_batch == 0 {
        return Err(flag_err("--micro-batch", "must be at least 1"));
    }
    let batch = match &args.global_batch_tokens {
        Some(s) => BatchSpec::Global {
            tokens: positive_count("--global-batch-tokens", s, MAX_BATCH_TOKENS)?,
        },
        None => BatchSpec::PerRank {
            micro_batches: cfg.train.grad_accum,
        },
    };
    let (tokens, tokens_defaulted) = match &args.tokens {
        Some(s) => (positive_count("--tokens", s, MAX_TOKENS)?, false),
        None => (DEFAULT_TOKENS_PER_PARAM * count(m).total as f64, true),
    };
    let recompute = match (args.recompute, args.selective_recompute) {
        (true, true) => {
            return Err(flag_err(
                "--selective-recompute",
                "give --recompute (full) or --selective-recompute, not both",
            ));
        }
        (true, false) => Recompute::Full,
        (false, true) => Recompute::Selective,
        (false, false) => Recompute::None,
    };
    let mut sc = Scenario {
        gpus: args.gpus,
        gpu,
        layout: Layout::of(args.gpus, 1, 1, 1),
        zero1: args.zero1,
        recompute,
        seq_len: cfg.data.seq_len,
        micro_batch,
        micro_batches: 1,
        batch,
        tokens,
        tokens_defaulted,
        mfu: args.mfu,
        layout_chosen: false,
    };
    let too_small = |dp: usize| {
        let seq = cfg.data.seq_len;
        flag_err(
            "--global-batch-tokens",
            format!(
                "{} is less than one micro-batch per data-parallel rank: dp {dp} × micro-batch {micro_batch} × seq {seq} = {} tokens",
                args.global_batch_tokens.as_deref().unwrap_or_default(),
                report::count(dp as f64 * micro_batch as f64 * seq as f64)
            ),
        )
    };
    if args.dp.is_none() && args.tp.is_none() && args.pp.is_none() && args.ep.is_none() {
        // No layout given: the smallest tp × pp that fits, else the layout needing the least memory
        // (which the report then shows as not fitting, with what would).
        let chosen = search::smallest_fitting_layout(m, &sc, sc.zero1, sc.recompute)
            .or_else(|| search::least_memory_layout(m, &sc, sc.zero1, sc.recompute))
            .ok_or_else(|| {
                // Every candidate failed only because the batch is too small: name the smallest dp.
                let dp = layout::candidates(m, args.gpus).iter().map(|l| l.dp).min();
                too_small(dp.unwrap_or(args.gpus))
            })?;
        return Ok(Scenario {
            layout_chosen: true,
            ..chosen.scenario
        });
    }
    let (tp, pp, ep) = (args.tp.unwrap_or(1), args.pp.unwrap_or(1), args.ep.unwrap_or(1));
    for (flag, v) in [("--tp", tp), ("--pp", pp), ("--ep", ep)] {
        if v == 0 {
            return Err(flag_err(flag, "must be at least 1"));
        }
    }
    let dp = match args.dp {
        Some(dp) => dp,
        None if args.gpus.is_multiple_of(tp * pp) => args.gpus / (tp * pp),
        None => {
            return Err(flag_err(
                "--tp/--pp",
                format!(
                    "tp {tp} × pp {pp} = {} does not divide --gpus {}",
                    tp * pp,
                    args.gpus
                ),
            ));
        }
    };
    sc.layout = Layout { dp, tp, pp, ep };
    layout::check(m, args.gpus, &sc.layout).map_err(|(flag, msg)| flag_err(flag, msg))?;
    sc.micro_batches = sc
        .batch
        .micro_batches(dp, micro_batch, sc.seq_len)
        .ok_or_else(|| too_small(dp))?;
    Ok(sc)
}

/// A count such as `10T`, `300B`, `16M`, `2.5e12`, `100_000` or `1,000` (suffixes k, M, B or G, T,
/// any case, powers of 1000), or `None`.
pub fn parse_count(s: &str) -> Option<f64> {
    let s: String = s.trim().chars().filter(|c| *c != '_' && *c != ',').collect();
    let (number, scale) = match s.chars().last()?.to_ascii_lowercase() {
        'k' => (&s[..s.len() - 1], 1e3),
        'm' => (&s[..s.len() - 1], 1e6),
        'b' | 'g' => (&s[..s.len() - 1], 1e9),
        't' => (&s[..s.len() - 1], 1e12),
        _ => (s.as_str(), 1.0),
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

fn positive_count(flag: &str, s: &str, max: f64) -> Result<f64> {
    match parse_count(s) {
        Some(v) if v > max => Err(flag_err(
            flag,
            format!(
                "`{s}` is more than {} tokens, far past any run's",
                report::count(max)
            ),
        )),
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(flag_err(
            flag,
            format!("`{s}` is not a positive count; expected e.g. 10T, 300B, 16M or 1.5e12"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::memory::Term;

    fn cfg(preset: &str) -> Config {
        config::from_yaml(&format!("preset: {preset}\n"), "t.yaml", &[]).unwrap()
    }

    fn flag_of(e: Error) -> String {
        match e {
            Error::Flag { flag, .. } => flag,
            other => panic!("expected a flag error, got {other}"),
        }
    }

    #[test]
    fn grok1_parameters() {
        let c = cfg("grok-1");
        let mut a = PlanArgs::new("unused.yaml", 1024, "h100");
        (a.tp, a.pp, a.ep, a.micro_batch) = (Some(8), Some(8), Some(8), Some(1));
        let p = Plan::new(&c, scenario(&a, &c).unwrap());
        // ≈316B total, ≈84B active.
        assert!(
            (p.params.total as f64 / 1e9 - 315.68).abs() < 0.01,
            "{}",
            p.params.total
        );
        assert!(
            (p.params.active as f64 / 1e9 - 83.76).abs() < 0.01,
            "{}",
            p.params.active
        );
        assert_eq!(p.scenario.layout, Layout::of(16, 8, 8, 8));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let c = cfg("grok-1");
        let base = || PlanArgs::new("unused.yaml", 64, "h100");
        let err = |a: PlanArgs| flag_of(scenario(&a, &c).unwrap_err());
        let mut a = base();
        (a.dp, a.tp, a.pp) = (Some(4), Some(8), Some(4));
        assert_eq!(err(a), "--dp/--tp/--pp");
        let mut a = base();
        a.tp = Some(3);
        assert_eq!(err(a), "--tp/--pp");
        assert_eq!(
            err(PlanArgs {
                gpu: "a100".into(),
                ..base()
            }),
            "--gpu"
        );
        assert_eq!(err(PlanArgs { mfu: 0.0, ..base() }), "--mfu");
        assert_eq!(err(PlanArgs { mfu: 1.5, ..base() }), "--mfu");
        assert_eq!(
            err(PlanArgs {
                mfu: f64::NAN,
                ..base()
            }),
            "--mfu"
        );
        assert_eq!(err(PlanArgs { gpus: 0, ..base() }), "--gpus");
        // Once an overflow panic in the layout search (found 2026-12-06).
        assert_eq!(
            err(PlanArgs {
                gpus: usize::MAX,
                ..base()
            }),
            "--gpus"
        );
        assert_eq!(
            err(PlanArgs {
                tokens: Some("lots".into()),
                ..base()
            }),
            "--tokens"
        );
        assert_eq!(
            err(PlanArgs {
                tokens: Some("-5T".into()),
                ..base()
            }),
            "--tokens"
        );
        assert_eq!(
            err(PlanArgs {
                micro_batch: Some(0),
                ..base()
            }),
            "--micro-batch"
        );
        assert_eq!(
            err(PlanArgs {
                ep: Some(3),
                ..base()
            }),
            "--ep"
        );
        assert_eq!(
            err(PlanArgs {
                recompute: true,
                selective_recompute: true,
                ..base()
            }),
            "--selective-recompute"
        );
        // 64 ranks × 8192 tokens is more than a 100k-token global batch.
        assert_eq!(
            err(PlanArgs {
                global_batch_tokens: Some("100k".into()),
                dp: Some(64),
                ..base()
            }),
            "--global-batch-tokens"
        );
        // Past the bounds, a plan printed 309-digit counts and "inf days" (`--tokens 1e308`) or
        // overflowed its integer counts (`--global-batch-tokens 1e308`).
        for (tokens, batch, flag) in [
            ("2e18", None, "--tokens"),
            ("1T", Some("2e15"), "--global-batch-tokens"),
        ] {
            let a = PlanArgs {
                tokens: Some(tokens.into()),
                global_batch_tokens: batch.map(String::from),
                ..base()
            };
            let e = scenario(&a, &c).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains("far past any run's"), "{e}");
        }
        let at_the_bounds = PlanArgs {
            tokens: Some("1e18".into()),
            global_batch_tokens: Some("1e15".into()),
            ..base()
        };
        scenario(&at_the_bounds, &c).unwrap();
    }

    /// Every count of a step is a product in f64: `--micro-batch 18446744073709551615` overflowed
    /// the integer products of the batch, the logits and the activations (found 2026-12-07).
    #[test]
    fn a_micro_batch_of_any_size_is_planned_without_overflow() {
        let c = cfg("grok-1");
        let mut a = PlanArgs::new("unused.yaml", 1024, "h100");
        (a.dp, a.micro_batch) = (Some(1024), Some(usize::MAX));
        let p = Plan::new(&c, scenario(&a, &c).unwrap());
        let tokens = usize::MAX as f64 * 1024.0 * c.data.seq_len as f64;
        assert_eq!(p.time.tokens_per_step, tokens);
        let text = p.to_string();
        assert!(
            text.contains(&format!("{} tokens per step", report::count(tokens))),
            "{text}"
        );
        assert!(!text.contains("0000000000"), "{text}");
        a.global_batch_tokens = Some("1e15".into());
        let e = scenario(&a, &c).unwrap_err().to_string();
        assert!(
            e.contains("is less than one micro-batch per data-parallel rank"),
            "{e}"
        );
    }

    #[test]
    fn clap_parses_the_documented_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            plan: PlanArgs,
        }
        let cli = Cli::try_parse_from([
            "plan",
            "configs/grok-1.yaml",
            "--gpus",
            "1024",
            "--gpu",
            "h200",
            "--tokens",
            "10T",
            "--mfu",
            "0.35",
            "--dp",
            "16",
            "--tp",
            "8",
            "--pp",
            "8",
            "--ep",
            "8",
            "--recompute",
            "--zero1",
            "--micro-batch",
            "1",
            "--global-batch-tokens",
            "16M",
            "--set",
            "data.seq_len=4096",
        ])
        .unwrap();
        let a = cli.plan;
        assert_eq!(a.config, PathBuf::from("configs/grok-1.yaml"));
        assert_eq!((a.gpus, a.gpu.as_str(), a.mfu), (1024, "h200", 0.35));
        assert_eq!((a.dp, a.tp, a.pp, a.ep), (Some(16), Some(8), Some(8), Some(8)));
        assert!(a.recompute && a.zero1 && !a.selective_recompute);
        assert_eq!(a.set, vec!["data.seq_len=4096".to_string()]);
        // Defaults.
        let b = Cli::try_parse_from(["plan", "c.yaml", "--gpus", "8", "--gpu", "h100"])
            .unwrap()
            .plan;
        assert_eq!(b.mfu, 0.4);
        assert_eq!((b.tokens, b.dp, b.micro_batch), (None, None, None));
        // --gpus is required.
        assert!(Cli::try_parse_from(["plan", "c.yaml", "--gpu", "h100"]).is_err());
    }

    #[test]
    fn counts_with_suffixes() {
        assert_eq!(parse_count("10T"), Some(1e13));
        assert_eq!(parse_count("300B"), Some(3e11));
        assert_eq!(parse_count("16m"), Some(1.6e7));
        assert_eq!(parse_count("2.5e12"), Some(2.5e12));
        assert_eq!(parse_count("100_000"), Some(1e5));
        assert_eq!(parse_count("1,000k"), Some(1e6));
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("T"), None);
    }

    #[test]
    fn batch_from_config_or_flag() {
        let c = cfg("gpu-350m"); // micro_batch 16, grad_accum 1, seq 1024
        let mut a = PlanArgs::new("unused.yaml", 8, "h100");
        a.dp = Some(8);
        let sc = scenario(&a, &c).unwrap();
        assert_eq!(sc.tokens_per_step(), (16 * 8 * 1024) as f64);
        // 1M tokens = 1024 sequences over 8 ranks × 16 = 8 micro-batches.
        a.global_batch_tokens = Some("1048576".into());
        let sc = scenario(&a, &c).unwrap();
        assert_eq!(sc.micro_batches, 8);
        assert_eq!(sc.tokens_per_step(), 1_048_576.0);
        // Default tokens: 20 per parameter.
        assert!(sc.tokens_defaulted);
        assert_eq!(sc.tokens, 20.0 * count(&c.model).total as f64);
    }

    #[test]
    fn a_layout_that_cannot_fit_reports_it() {
        let c = cfg("grok-1");
        // Pure data parallelism: every H100 would hold all 316B parameters.
        let mut a = PlanArgs::new("unused.yaml", 1024, "h100");
        (a.dp, a.micro_batch) = (Some(1024), Some(1));
        let p = Plan::new(&c, scenario(&a, &c).unwrap());
        assert!(!p.memory.fits());
        assert_eq!(p.memory.dominant().0, Term::Optimizer);
        assert!(!p.suggestions.is_empty());
        let text = p.to_string();
        assert!(text.contains("DOES NOT FIT"), "{text}");
        assert!(text.contains("the largest term is optimizer state"), "{text}");
        assert!(text.contains("would fit"), "{text}");
        // What it suggests does fit.
        for s in &p.suggestions {
            assert!(s.total <= s.usable, "{s:?}");
        }
    }

    #[test]
    fn the_chosen_layout_fits() {
        let c = cfg("grok-1");
        let mut a = PlanArgs::new("unused.yaml", 1024, "h100");
        a.micro_batch = Some(1);
        a.zero1 = true;
        let p = Plan::new(&c, scenario(&a, &c).unwrap());
        assert!(p.scenario.layout_chosen);
        assert!(p.memory.fits(), "{p}");
        assert!(p.to_string().contains("chosen"));
    }

    /// Prints the reports shown in docs/plan.md: `cargo test --lib plan::tests::print_cases -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_cases() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (args, cmd) in doc_cases(root) {
            println!("$ {cmd}");
            println!("{}", plan(&args).unwrap());
        }
    }

    /// The docs/plan.md cases, with the command line each stands for.
    fn doc_cases(root: &std::path::Path) -> Vec<(PlanArgs, String)> {
        let grok = |gpus: usize, gpu: &str, (dp, tp, pp, ep): (usize, usize, usize, usize), opts: &[&str]| {
            let mut a = PlanArgs::new(root.join("configs/grok-1.yaml"), gpus, gpu);
            (a.dp, a.tp, a.pp, a.ep) = (Some(dp), Some(tp), Some(pp), Some(ep));
            (a.micro_batch, a.tokens) = (Some(1), Some("10T".into()));
            a.zero1 = opts.contains(&"--zero1");
            a.recompute = opts.contains(&"--recompute");
            a.selective_recompute = opts.contains(&"--selective-recompute");
            let cmd = format!(
                "colossus plan configs/grok-1.yaml --gpus {gpus} --gpu {gpu} --tokens 10T --dp {dp} --tp {tp} --pp {pp} --ep {ep} --micro-batch 1 {}",
                opts.join(" ")
            );
            (a, cmd.trim_end().to_string())
        };
        let small = PlanArgs::new(root.join("configs/gpu-350m.yaml"), 1, "h100");
        vec![
            grok(100_000, "h100", (12_500, 8, 1, 4), &["--zero1", "--recompute"]),
            grok(
                200_000,
                "h100",
                (25_000, 8, 1, 8),
                &["--zero1", "--selective-recompute"],
            ),
            grok(
                1_000_000,
                "b200",
                (125_000, 8, 1, 8),
                &["--zero1", "--selective-recompute"],
            ),
            (
                small,
                "colossus plan configs/gpu-350m.yaml --gpus 1 --gpu h100".into(),
            ),
            grok(100_000, "h100", (12_500, 8, 1, 4), &[]),
        ]
    }
}
