//! The layout search: the layout `plan` picks when given none, and what it suggests when a layout
//! does not fit in GPU memory.

use std::cmp::Reverse;

use super::hardware::Gpu;
use super::layout::{Layout, Recompute, Scenario, candidates};
use super::memory::{Memory, memory};
use super::schedule::pipeline_bubble;
use crate::model::GrokConfig;

/// Memory options from cheapest to dearest: ZeRO-1 adds no compute and no communication volume
/// (its reduce-scatter + all-gather moves what the all-reduce did); selective recomputation reruns
/// the attention core (a few % of the FLOPs); full recomputation reruns every forward (+⅓).
pub const OPTIONS: [(bool, Recompute); 6] = [
    (false, Recompute::None),
    (true, Recompute::None),
    (false, Recompute::Selective),
    (true, Recompute::Selective),
    (false, Recompute::Full),
    (true, Recompute::Full),
];

/// A scenario with the memory it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub scenario: Scenario,
    pub memory: Memory,
}

impl Fit {
    pub fn new(m: &GrokConfig, scenario: Scenario) -> Fit {
        Fit {
            memory: memory(m, &scenario),
            scenario,
        }
    }

    /// The 1F1B pipeline bubble of this layout and batch.
    pub fn bubble(&self) -> f64 {
        pipeline_bubble(self.scenario.layout.pp, self.scenario.micro_batches)
    }

    /// The flags that select this layout and these options.
    pub fn flags(&self) -> String {
        let (l, sc) = (&self.scenario.layout, &self.scenario);
        let mut s = format!("--dp {} --tp {} --pp {} --ep {}", l.dp, l.tp, l.pp, l.ep);
        if sc.zero1 {
            s.push_str(" --zero1");
        }
        if sc.recompute != Recompute::None {
            s.push(' ');
            s.push_str(sc.recompute.flag());
        }
        s
    }
}

/// Layouts of `gpus` GPUs in the order the planner prefers them: fewest model-parallel ranks tp·pp
/// (the least communication and the largest data-parallel degree), then fewer pipeline stages (tp
/// stays on NVLink; stages add a bubble), then more expert parallelism (fewer expert weights per
/// GPU).
fn ordered(m: &GrokConfig, gpus: usize) -> Vec<Layout> {
    let mut all = candidates(m, gpus);
    all.sort_by_key(|l| (l.tp * l.pp, l.pp, Reverse(l.ep)));
    all
}

/// Pipeline bubbles above this share of the step make a fitting layout a last resort: 0.2 is about
/// what the usual 1F1B rule of thumb, m ≥ 4·pp micro-batches, gives ((pp−1)/(5pp−1) < 0.2).
pub const MAX_PREFERRED_BUBBLE: f64 = 0.2;

/// The first of `fits` (in preference order, all fitting) whose pipeline bubble is at most
/// `MAX_PREFERRED_BUBBLE`, else the first: a layout that fits but idles most of each step is
/// only worth it when nothing else fits.
pub fn prefer_small_bubble(fits: Vec<Fit>) -> Option<Fit> {
    let i = fits
        .iter()
        .position(|f| f.bubble() <= MAX_PREFERRED_BUBBLE)
        .unwrap_or(0);
    fits.into_iter().nth(i)
}

/// The first layout in the preferred order that fits with the given options (preferring one with
/// a small pipeline bubble, `prefer_small_bubble`).
pub fn smallest_fitting_layout(
    m: &GrokConfig,
    sc: &Scenario,
    zero1: bool,
    recompute: Recompute,
) -> Option<Fit> {
    let fits = ordered(m, sc.gpus)
        .into_iter()
        .filter_map(|l| sc.with(l, zero1, recompute))
        .map(|s| Fit::new(m, s))
        .filter(|f| f.memory.fits())
        .collect();
    prefer_small_bubble(fits)
}

/// The layout needing the least memory per GPU with the given options (the one to show when
/// nothing fits).
pub fn least_memory_layout(m: &GrokConfig, sc: &Scenario, zero1: bool, recompute: Recompute) -> Option<Fit> {
    ordered(m, sc.gpus)
        .into_iter()
        .filter_map(|l| sc.with(l, zero1, recompute))
        .map(|s| Fit::new(m, s))
        .min_by(|a, b| a.memory.total().total_cmp(&b.memory.total()))
}

/// One way to make a run fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// What changes, in words.
    pub what: String,
    /// The flags to pass (layout and options), empty when only the GPU changes.
    pub flags: String,
    /// Bytes per GPU it needs.
    pub total: f64,
    pub usable: f64,
    /// The 1F1B pipeline bubble of the suggested layout (0 without pipelining): a layout can fit
    /// and still idle most of the step when there are fewer micro-batches than stages.
    pub bubble: f64,
}

impl Suggestion {
    fn from_fit(what: impl Into<String>, f: &Fit) -> Suggestion {
        Suggestion {
            what: what.into(),
            flags: f.flags(),
            total: f.memory.total(),
            usable: f.memory.usable,
            bubble: f.bubble(),
        }
    }
}

/// For a scenario that does not fit, in this order and each only when it exists:
///
/// 1. the cheapest memory options (ZeRO-1, then recomputation; `OPTIONS`) on the same layout;
/// 2. the smallest tp·pp layout that fits with the scenario's own options;
/// 3. otherwise the smallest one that fits with ZeRO-1 and full recomputation;
/// 4. otherwise the least memory any layout of these GPUs reaches (shown as the closest);
/// 5. the first larger GPU on which the same flags fit.
///
/// Empty when the scenario fits.
pub fn suggestions(m: &GrokConfig, sc: &Scenario) -> Vec<Suggestion> {
    let current = Fit::new(m, sc.clone());
    if current.memory.fits() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let stronger = |&(z, r): &(bool, Recompute)| {
        (z || !sc.zero1) && r >= sc.recompute && (z, r) != (sc.zero1, sc.recompute)
    };
    if let Some(f) = OPTIONS
        .iter()
        .filter(|o| stronger(o))
        .filter_map(|&(z, r)| sc.with(sc.layout, z, r))
        .map(|s| Fit::new(m, s))
        .find(|f| f.memory.fits())
    {
        out.push(Suggestion::from_fit(
            "same layout, cheapest memory options that fit",
            &f,
        ));
    }
    if let Some(f) = smallest_fitting_layout(m, sc, sc.zero1, sc.recompute) {
        out.push(Suggestion::from_fit(
            "smallest tp×pp that fits with the same options",
            &f,
        ));
    } else if let Some(f) = smallest_fitting_layout(m, sc, true, Recompute::Full) {
        out.push(Suggestion::from_fit(
            "smallest tp×pp that fits with ZeRO-1 and full recomputation",
            &f,
        ));
    } else if let Some(f) = least_memory_layout(m, sc, true, Recompute::Full) {
        out.push(Suggestion::from_fit(
            format!("nothing on {} GPUs fits; the least memory per GPU is", sc.gpus),
            &f,
        ));
    }
    for gpu in [Gpu::H100, Gpu::H200, Gpu::B200] {
        if gpu.spec().memory_gb > sc.gpu.spec().memory_gb {
            let f = Fit::new(m, Scenario { gpu, ..sc.clone() });
            if f.memory.fits() {
                out.push(Suggestion {
                    what: format!(
                        "the same flags on {}s (--gpu {})",
                        gpu.spec().name,
                        gpu.flag_value()
                    ),
                    flags: String::new(),
                    total: f.memory.total(),
                    usable: f.memory.usable,
                    bubble: pipeline_bubble(sc.layout.pp, sc.micro_batches),
                });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{grok1, scenario};

    fn grok_scenario(layout: Layout, zero1: bool, recompute: Recompute) -> Scenario {
        let mut sc = scenario(layout, zero1, recompute, 1);
        sc.seq_len = 8192;
        sc
    }

    #[test]
    fn grok1_on_one_node_cannot_fit_and_says_what_would() {
        let m = grok1();
        // 316B params × 16 B on 8 GPUs is ≈ 630 GB each: nothing on 8 H100s holds it.
        let sc = grok_scenario(Layout::of(1, 8, 1, 1), false, Recompute::None);
        let f = Fit::new(&m, sc.clone());
        assert!(!f.memory.fits());
        assert_eq!(f.memory.dominant().0, crate::plan::memory::Term::Optimizer);
        let s = suggestions(&m, &sc);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].what.starts_with("nothing on 8 GPUs fits"), "{s:?}");
        assert!(s[0].total > s[0].usable);
    }

    #[test]
    fn suggests_options_then_layouts() {
        let m = grok1();
        // 512 GPUs, pure tensor parallelism inside nodes: dp 64 × tp 8 with ep 8.
        let sc = grok_scenario(Layout::of(64, 8, 1, 8), false, Recompute::None);
        assert!(!Fit::new(&m, sc.clone()).memory.fits());
        let s = suggestions(&m, &sc);
        assert!(!s.is_empty());
        for x in &s {
            assert!(x.total <= x.usable, "{x:?}");
        }
        // The first suggestion keeps the layout and turns on ZeRO-1 and/or recomputation.
        assert!(s[0].flags.starts_with("--dp 64 --tp 8 --pp 1 --ep 8 "), "{s:?}");
    }

    #[test]
    fn a_fitting_scenario_needs_no_suggestion() {
        let m = crate::plan::fixtures::hand();
        let sc = scenario(Layout::of(1, 1, 1, 1), false, Recompute::None, 1);
        assert!(suggestions(&m, &sc).is_empty());
        let f = smallest_fitting_layout(&m, &sc, false, Recompute::None).unwrap();
        assert_eq!(f.flags(), "--dp 1 --tp 1 --pp 1 --ep 1");
    }

    #[test]
    fn a_big_bubble_is_a_last_resort() {
        let m = crate::plan::fixtures::hand();
        let fit = |pp: usize, micro_batches: usize| {
            let l = Layout {
                dp: 1,
                tp: 1,
                pp,
                ep: 1,
            };
            Fit::new(&m, scenario(l, false, Recompute::None, micro_batches))
        };
        // pp 2 with 1 micro-batch idles half the step; pp 2 with 8 idles 1/9; pp 4 with 2, 3/5.
        let chosen = prefer_small_bubble(vec![fit(2, 1), fit(4, 2), fit(2, 8)]).unwrap();
        assert_eq!((chosen.scenario.layout.pp, chosen.scenario.micro_batches), (2, 8));
        // Nothing with a small bubble: the first one still beats nothing.
        let chosen = prefer_small_bubble(vec![fit(2, 1), fit(4, 2)]).unwrap();
        assert_eq!((chosen.scenario.layout.pp, chosen.scenario.micro_batches), (2, 1));
        assert!(prefer_small_bubble(Vec::new()).is_none());
    }

    #[test]
    fn preferred_order() {
        let m = grok1();
        let o = ordered(&m, 64);
        assert_eq!(o[0], Layout::of(64, 1, 1, 8));
        // tp before pp at equal tp·pp.
        let i = o.iter().position(|l| *l == Layout::of(32, 2, 1, 8)).unwrap();
        let j = o.iter().position(|l| *l == Layout::of(32, 1, 2, 8)).unwrap();
        assert!(i < j);
    }
}
