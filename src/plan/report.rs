//! The text `colossus plan` prints: a `Display` for `Plan`, with no arithmetic beyond unit
//! conversion (every number comes from the structs the other files compute).

use std::fmt;

use super::Plan;
use super::comm::Dim;
use super::hardware::{FACILITY_OVERHEAD, GPUS_PER_NODE, Link, USABLE_MEMORY_FRACTION};
use super::layout::{BatchSpec, Recompute};
use super::memory::{GRAD_BYTES, OPTIMIZER_BYTES, Term, WEIGHT_BYTES};
use super::search::MAX_PREFERRED_BUBBLE;

/// Global batches above this many tokens get a note: 16M (2²⁴) tokens is the batch Llama 3 405B
/// ended pre-training with (Dubey et al. 2024), among the largest any published run reports.
pub const LARGE_BATCH_TOKENS: f64 = 16_777_216.0;

/// 1234 → "1.23K", 315.68e9 → "315.68B", 2e18 → "2.00e18".
pub fn count(n: f64) -> String {
    if n.abs() >= 1e15 {
        return format!("{n:.2e}");
    }
    let units = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    for (scale, unit) in units {
        if n.abs() >= scale {
            return format!("{:.2}{unit}", n / scale);
        }
    }
    format!("{n:.0}")
}

/// Bytes in decimal units (GB = 10⁹ bytes, as GPU memory is quoted); past 10⁶ TB in exponent form.
pub fn bytes(b: f64) -> String {
    if b.abs() >= 1e18 {
        return format!("{:.2e} TB", b / 1e12);
    }
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    for (scale, unit) in units {
        if b.abs() >= scale {
            return format!("{:.1} {unit}", b / scale);
        }
    }
    format!("{b:.0} B")
}

pub fn seconds(s: f64) -> String {
    if s == 0.0 {
        "0 s".into()
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Watts as kW or MW.
pub fn power(w: f64) -> String {
    if w >= 1e6 {
        format!("{:.1} MW", w / 1e6)
    } else {
        format!("{:.1} kW", w / 1e3)
    }
}

/// Watt-hours as kWh, MWh or GWh.
pub fn energy(wh: f64) -> String {
    if wh >= 1e9 {
        format!("{:.2} GWh", wh / 1e9)
    } else if wh >= 1e6 {
        format!("{:.1} MWh", wh / 1e6)
    } else {
        format!("{:.1} kWh", wh / 1e3)
    }
}

fn days(d: f64) -> String {
    if d < 2.0 {
        format!("{d:.2} days ({:.1} hours)", d * 24.0)
    } else {
        format!("{d:.1} days")
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, sc, mem, t) = (&self.model, &self.scenario, &self.memory, &self.time);
        let l = &sc.layout;
        let spec = sc.gpu.spec();
        let nodes = sc.gpus.div_ceil(GPUS_PER_NODE);
        writeln!(
            f,
            "plan: {} (preset {}) on {} × {} ({} node{} of up to {GPUS_PER_NODE})",
            self.run_name,
            self.preset,
            sc.gpus,
            spec.name,
            nodes,
            if nodes == 1 { "" } else { "s" }
        )?;

        writeln!(f, "model")?;
        writeln!(f, "  shape             {}", m.shape_line())?;
        writeln!(
            f,
            "  parameters        {} total, {} active per token",
            count(self.params.total as f64),
            count(self.params.active as f64)
        )?;
        writeln!(
            f,
            "  training FLOPs    {:.3e} per token at seq {} (6 × active + causal attention)",
            t.flops_per_token, sc.seq_len
        )?;

        let source = match (sc.layout_chosen, mem.fits()) {
            (false, _) => "given",
            (true, true) => "chosen: the smallest tp × pp that fits",
            (true, false) => "chosen: nothing fits, this layout needs the least memory",
        };
        writeln!(f, "layout              {l} ({source})")?;
        let link = |dim: Dim| {
            let term = self.comm.term(dim);
            if term.group == 1 {
                "-".to_string()
            } else {
                term.link.to_string()
            }
        };
        let tp_what = if l.tp == 1 {
            "no tensor parallelism".to_string()
        } else {
            format!("heads, expert ffn and vocabulary split {} ways", l.tp)
        };
        writeln!(f, "  tp {:<8} {:<11} {tp_what}", l.tp, link(Dim::Tp))?;
        writeln!(
            f,
            "  pp {:<8} {:<11} {} layers on the busiest stage",
            l.pp,
            link(Dim::Pp),
            l.layers_per_stage(m.n_layers)
        )?;
        writeln!(
            f,
            "  ep {:<8} {:<11} {} of {} experts per GPU",
            l.ep,
            link(Dim::Ep),
            m.n_experts / l.ep,
            m.n_experts
        )?;
        let dp_what = if l.dp == 1 {
            "one replica".to_string()
        } else {
            format!(
                "dense weights replicated {}×, expert weights {}×",
                l.dp,
                l.expert_dp()
            )
        };
        writeln!(f, "  dp {:<8} {:<11} {dp_what}", l.dp, link(Dim::DpDense))?;
        writeln!(
            f,
            "batch               {} × {} tokens per micro-batch, {} micro-batch{} per dp rank → {} tokens per step ({} sequences)",
            sc.micro_batch,
            sc.seq_len,
            sc.micro_batches,
            if sc.micro_batches == 1 { "" } else { "es" },
            count(t.tokens_per_step),
            count(sc.sequences_per_step())
        )?;
        if let BatchSpec::Global { tokens } = sc.batch
            && tokens < t.tokens_per_step
        {
            writeln!(
                f,
                "                    (--global-batch-tokens {} rounded up to whole micro-batches)",
                count(tokens)
            )?;
        }

        writeln!(
            f,
            "memory per GPU      busiest stage; bf16 weights and grads, f32 master weights + Adam m, v"
        )?;
        writeln!(
            f,
            "  parameters        {} on this GPU (dense {}, experts {})",
            count(mem.params.total() as f64),
            count(mem.params.dense as f64),
            count(mem.params.experts as f64)
        )?;
        writeln!(
            f,
            "  weights           {:>9}  {WEIGHT_BYTES} B/param",
            bytes(mem.weights)
        )?;
        writeln!(
            f,
            "  gradients         {:>9}  {GRAD_BYTES} B/param",
            bytes(mem.grads)
        )?;
        let sharding = if sc.zero1 {
            format!(
                "ZeRO-1: dense sharded over {}, experts over {}",
                l.dp,
                l.expert_dp()
            )
        } else {
            "not sharded (no --zero1)".to_string()
        };
        writeln!(
            f,
            "  optimizer state   {:>9}  {OPTIMIZER_BYTES} B/param, {sharding}",
            bytes(mem.optimizer)
        )?;
        writeln!(
            f,
            "  activations       {:>9}  {}, {} micro-batch{} in flight on the first stage",
            bytes(mem.activations()),
            sc.recompute.describe(),
            l.pp.min(sc.micro_batches),
            if l.pp.min(sc.micro_batches) == 1 { "" } else { "es" }
        )?;
        for mode in [Recompute::None, Recompute::Selective, Recompute::Full] {
            let a = mem.activations_for(mode);
            let stages = if l.pp > 1 {
                format!("  (first stage {}, last {})", bytes(a.first), bytes(a.last))
            } else {
                String::new()
            };
            writeln!(
                f,
                "    {:<15} {:>9}{stages}{}",
                mode.name(),
                bytes(a.worst()),
                if mode == sc.recompute { "  ←" } else { "" }
            )?;
        }
        writeln!(
            f,
            "  total             {:>9}  of {} usable ({:.0}% of {} GB): {}",
            bytes(mem.total()),
            bytes(mem.usable),
            USABLE_MEMORY_FRACTION * 100.0,
            spec.memory_gb,
            if mem.fits() { "fits" } else { "DOES NOT FIT" }
        )?;
        if !mem.fits() {
            let (term, size) = mem.dominant();
            let why = match term {
                Term::Weights | Term::Gradients => {
                    format!(
                        "{} parameters on each GPU; more tp, pp or ep spreads them",
                        count(mem.params.total() as f64)
                    )
                }
                Term::Optimizer if sc.zero1 => {
                    "already sharded by ZeRO-1; more tp, pp or ep spreads it".to_string()
                }
                Term::Optimizer => {
                    "12 B for every parameter on the GPU; --zero1 shards it over dp".to_string()
                }
                Term::Activations => format!(
                    "{}; recomputation, a smaller --micro-batch or more tp shrink them",
                    sc.recompute.describe()
                ),
            };
            writeln!(
                f,
                "  why               the largest term is {term}, {}: {why}",
                bytes(size)
            )?;
            if self.suggestions.is_empty() {
                writeln!(f, "  would fit         nothing found")?;
            }
            for s in &self.suggestions {
                let flags = if s.flags.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.flags)
                };
                let bubble = if s.bubble > 0.0 {
                    format!(", pipeline bubble {:.0}% of the step", s.bubble * 100.0)
                } else {
                    String::new()
                };
                let verdict = if s.total <= s.usable {
                    "would fit"
                } else {
                    "closest"
                };
                writeln!(
                    f,
                    "  {verdict:<17} {}{flags} ({} per GPU{bubble})",
                    s.what,
                    bytes(s.total)
                )?;
            }
        }

        writeln!(f, "communication per GPU per step (bandwidth only, no latency)")?;
        for term in &self.comm.terms {
            if term.group == 1 {
                continue;
            }
            writeln!(
                f,
                "  {:<30} {:>7} ranks {:>9}  {:<10} {:>4.0} GB/s {:>9}",
                term.dim.to_string(),
                term.group,
                bytes(term.bytes),
                term.link.to_string(),
                term.link.gb_per_s(&spec),
                seconds(term.seconds)
            )?;
        }
        let comm_s = self.comm.total_seconds();
        if comm_s == 0.0 {
            writeln!(f, "  none (one GPU)")?;
        } else {
            writeln!(
                f,
                "  total             {:>9}, {} = {:.0}% of the step if nothing overlaps",
                bytes(self.comm.total_bytes()),
                seconds(comm_s),
                comm_s / t.step_seconds * 100.0
            )?;
        }

        writeln!(
            f,
            "time at MFU {:.2} of {} TFLOP/s dense bf16 per GPU",
            sc.mfu, spec.peak_bf16_tflops
        )?;
        writeln!(f, "  step time         {}", seconds(t.step_seconds))?;
        writeln!(f, "  tokens per day    {}", count(t.tokens_per_day))?;
        writeln!(
            f,
            "  train {} tokens{}: {} steps, {}",
            count(sc.tokens),
            if sc.tokens_defaulted {
                " (default: 20 per parameter)"
            } else {
                ""
            },
            t.steps,
            days(t.days)
        )?;
        writeln!(
            f,
            "power               {} for the GPUs ({} W each), {} for the facility (× {FACILITY_OVERHEAD}); {} over the run",
            power(t.gpu_mw * 1e6),
            spec.watts,
            power(t.facility_mw * 1e6),
            energy(t.energy_mwh * 1e6)
        )?;

        let mut notes = Vec::new();
        if l.pp > 1 {
            let hint = if t.bubble > MAX_PREFERRED_BUBBLE {
                format!(
                    "; {} or more micro-batches per step (--global-batch-tokens, or --set train.grad_accum=N) would keep it under {:.0}%",
                    4 * l.pp,
                    MAX_PREFERRED_BUBBLE * 100.0
                )
            } else {
                String::new()
            };
            notes.push(format!(
                "the 1F1B pipeline bubble idles {:.1}% of each step ({} stages, {} micro-batch{}); the MFU assumed must absorb it{hint}",
                t.bubble * 100.0,
                l.pp,
                sc.micro_batches,
                if sc.micro_batches == 1 { "" } else { "es" }
            ));
            if sc.mfu > 1.0 - t.bubble {
                notes.push(format!(
                    "MFU {:.2} is above 1 − bubble = {:.2}: unreachable",
                    sc.mfu,
                    1.0 - t.bubble
                ));
            }
        }
        if sc.recompute != Recompute::None {
            notes.push(format!(
                "{} recomputation makes the GPUs run {:.0}% more FLOPs than MFU counts: hardware FLOP utilisation {:.2}{}",
                sc.recompute.name(),
                (t.hfu / sc.mfu - 1.0) * 100.0,
                t.hfu,
                if t.hfu > 1.0 { " (above 1: unreachable)" } else { "" }
            ));
        }
        if l.tp > 1 && self.comm.term(Dim::Tp).link == Link::InterNode {
            notes.push("tp spans nodes: its per-layer all-reduces run at inter-node bandwidth".to_string());
        }
        if t.tokens_per_step > LARGE_BATCH_TOKENS {
            notes.push(format!(
                "{} tokens per step is {:.1}× the 16M-token batch Llama 3 405B ended pre-training with: past the critical batch size, more tokens per step stop cutting the steps needed to reach a given loss",
                count(t.tokens_per_step),
                t.tokens_per_step / LARGE_BATCH_TOKENS
            ));
        }
        if comm_s > t.step_seconds {
            notes.push(format!(
                "communication ({}) exceeds the step time at MFU {:.2}: only reachable if most of it overlaps compute",
                seconds(comm_s),
                sc.mfu
            ));
        }
        for n in notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(count(315.68e9), "315.68B");
        assert_eq!(count(12.0), "12");
        assert_eq!(bytes(80e9), "80.0 GB");
        assert_eq!(bytes(1.5e12), "1.5 TB");
        assert_eq!(count(2e18), "2.00e18");
        assert_eq!(bytes(2.5e19), "2.50e7 TB");
        assert_eq!(seconds(0.25), "250.0 ms");
        assert_eq!(seconds(2e-6), "2.0 µs");
        assert_eq!(days(1.5), "1.50 days (36.0 hours)");
        assert_eq!(power(70e6), "70.0 MW");
        assert_eq!(power(700.0), "0.7 kW");
        assert_eq!(energy(3.3346e9), "3.33 GWh");
        assert_eq!(energy(3290.0), "3.3 kWh");
    }
}
