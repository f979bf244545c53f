//! Refuses, before anything is allocated, a CPU run that cannot fit this machine's memory. A model
//! of 10^12 parameters, or a micro-batch of 10^12 rows, used to abort inside the allocator
//! ("memory allocation of … bytes failed", a core dump) after setup had already run.
//!
//! The estimate is a lower bound, so it never refuses a run that would fit: parameter state, the
//! output logits and the layers' stored activations, counted as `plan::memory` counts them for
//! bf16 (the CPU keeps them in f32, twice that), the attention scores left out. What it compares
//! with is what the kernel could still give: available RAM plus free swap, capped by a cgroup
//! limit when one is set. A run that passes may still not fit; one refused here never could.
//! Against the peak resident memory of `train configs/small.yaml --stop-after 2` (2026-12-06):
//! 453 MiB bound for 743 MiB used; 958 MiB for 1.43 GiB at `train.micro_batch=64`; 1.59 GiB for
//! 2.57 GiB at 64 × 256 tokens.

use crate::config::{BackendKind, Config};
use crate::error::Result;
use crate::model::params;
use crate::plan::layout::Layout;
use crate::plan::memory::layer_activations;

/// Bytes one CPU training rank needs at least, in two parts for the message. Each rank checks
/// its own: the ranks of one process start together, and a rank that counted its siblings
/// against memory they had already taken would count them twice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Need {
    /// f32 weights and gradients (8 B/param) and AdamW's two f32 moments (8 B/param, split over
    /// the ranks under ZeRO-1): what the model holds whatever the batch.
    pub state: f64,
    /// The rank's rows of one micro-batch: output logits (f32) and stored layer activations.
    pub activations: f64,
    /// What they were counted for, for the message: parameters, and the rank's rows.
    pub params: u64,
    pub rows: usize,
}

impl Need {
    pub fn total(&self) -> f64 {
        self.state + self.activations
    }
}

/// The lower bound for one rank training `cfg`.
pub fn training_need(cfg: &Config) -> Need {
    let m = &cfg.model;
    let d = &cfg.distributed;
    let p = params::count(m).total;
    let moments = if d.zero1 { 8.0 / d.world_size as f64 } else { 8.0 };
    let rows = (cfg.train.micro_batch / d.world_size).max(1);
    let seq = cfg.data.seq_len;
    let logits = 4.0 * rows as f64 * seq as f64 * m.vocab_size as f64;
    let layers = m.n_layers as f64 * layer_activations(m, seq, rows, &Layout::of(1, 1, 1, 1)).stored;
    Need {
        state: (8.0 + moments) * p as f64,
        activations: logits + layers,
        params: p,
        rows,
    }
}

/// Refuse `cfg` when it trains on the CPU and cannot fit; other backends allocate on a device
/// this check does not see. Unknown memory (not Linux) passes.
pub fn check_training(cfg: &Config) -> Result<()> {
    if cfg.backend != BackendKind::Cpu {
        return Ok(());
    }
    let Some((avail, source)) = available() else {
        return Ok(());
    };
    let need = training_need(cfg);
    if need.total() <= avail as f64 {
        return Ok(());
    }
    let msg = format!(
        "training needs at least {} of memory on the CPU backend: {} of weights, gradients and \
         AdamW moments for {} parameters and {} of activations for one micro-batch of {} × {} \
         tokens; this machine has {} ({source})",
        human(need.total()),
        human(need.state),
        need.params,
        human(need.activations),
        need.rows,
        cfg.data.seq_len,
        human(avail as f64),
    );
    // The state alone past the limit: no micro-batch helps. Otherwise a smaller one might.
    Err(if need.state > avail as f64 {
        cfg.error("model", format!("{msg}; make the model smaller"))
    } else {
        cfg.error(
            "train.micro_batch",
            format!(
                "{msg}; lower train.micro_batch (raise train.grad_accum to keep the batch) or data.seq_len"
            ),
        )
    })
}

fn human(bytes: f64) -> String {
    crate::checkpoint::inspect::human(bytes as usize)
}

/// Bytes the kernel could still give this process, and where the number came from.
fn available() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| super::mfu::proc_kib_field(&meminfo, name);
    let host = field("MemAvailable:")? + field("SwapFree:").unwrap_or(0);
    match cgroup_room() {
        Some(room) if room < host => Some((room, "its cgroup's memory limit less what it uses")),
        _ => Some((host, "MemAvailable plus free swap")),
    }
}

/// Room left under this process's cgroup memory limit, if one is set: the limit less what the
/// group uses besides page cache (which the kernel reclaims before it kills; counting it as used
/// would refuse runs that fit after a large corpus was read). Cgroup v2 at the process's own
/// group, else v1 at the memory controller's mount (a container's own group).
fn cgroup_room() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    cgroup_room_at(std::path::Path::new("/sys/fs/cgroup"), &cgroup)
}

/// `cgroup_room` under a cgroup mount `root`, for `/proc/self/cgroup`'s text `cgroup`.
fn cgroup_room_at(root: &std::path::Path, cgroup: &str) -> Option<u64> {
    let read = |dir: &std::path::Path, name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
    };
    let stat = |dir: &std::path::Path, key: &str| -> u64 {
        let text = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    };
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = root.join(path.trim_start_matches('/'));
        // "max" (no limit) does not parse: no limit then.
        if let Some(max) = read(&dir, "memory.max") {
            let used = read(&dir, "memory.current")?.saturating_sub(stat(&dir, "file"));
            // An unlimited swap reads "max" too: counted as none, which only lowers the room.
            let swap = read(&dir, "memory.swap.max").map_or(0, |m| {
                m.saturating_sub(read(&dir, "memory.swap.current").unwrap_or(0))
            });
            return Some(max.saturating_sub(used) + swap);
        }
    }
    let dir = root.join("memory");
    // v1 writes "no limit" as a page-rounded 2^63.
    let limit = read(&dir, "memory.limit_in_bytes").filter(|&l| l < 1 << 62)?;
    let used = read(&dir, "memory.usage_in_bytes")?.saturating_sub(stat(&dir, "total_cache"));
    Some(limit.saturating_sub(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        crate::config::from_yaml("preset: tiny\n", "test.yaml", &sets).expect("tiny preset")
    }

    /// The parts, by hand for the tiny preset: 16 B per parameter, and f32 logits of one
    /// micro-batch as a floor under the activations.
    #[test]
    fn need_counts_state_and_activations() {
        let cfg = tiny(&[]);
        let need = training_need(&cfg);
        let p = params::count(&cfg.model).total as f64;
        assert_eq!(need.state, 16.0 * p);
        let logits = 4.0 * (cfg.train.micro_batch * cfg.data.seq_len * cfg.model.vocab_size) as f64;
        assert!(need.activations > logits, "{need:?}");
        // ZeRO-1 over 4 ranks keeps a quarter of the moments; each rank sees a quarter of the rows.
        let cfg = tiny(&[
            "distributed.world_size=4",
            "distributed.zero1=true",
            "train.micro_batch=8",
        ]);
        assert_eq!(training_need(&cfg).state, 10.0 * p);
    }

    /// Page cache is not counted as used (the kernel reclaims it); "max" is no limit; v1's
    /// "no limit" is 2^63 rounded down to a page.
    #[test]
    fn cgroup_room_reads_v2_and_v1_limits() {
        let root = std::env::temp_dir().join(format!("colossus-cgroup-{}", std::process::id()));
        let v2 = root.join("v2");
        let group = v2.join("job/run");
        std::fs::create_dir_all(&group).unwrap();
        let write =
            |dir: &std::path::Path, name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(&group, "memory.max", "1000\n");
        write(&group, "memory.current", "700\n");
        write(&group, "memory.stat", "anon 300\nfile 400\nfile_mapped 10\n");
        write(&group, "memory.swap.max", "max\n");
        assert_eq!(cgroup_room_at(&v2, "0::/job/run\n"), Some(700));
        write(&group, "memory.swap.max", "50\n");
        write(&group, "memory.swap.current", "20\n");
        assert_eq!(cgroup_room_at(&v2, "0::/job/run\n"), Some(730));
        write(&group, "memory.max", "max\n");
        assert_eq!(cgroup_room_at(&v2, "0::/job/run\n"), None);

        let v1 = root.join("v1");
        let memory = v1.join("memory");
        std::fs::create_dir_all(&memory).unwrap();
        write(&memory, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&memory, "memory.usage_in_bytes", "900\n");
        write(&memory, "memory.stat", "cache 100\ntotal_cache 600\n");
        let v1_text = "4:memory:/process_api/abc\n0::/\n";
        assert_eq!(cgroup_room_at(&v1, v1_text), None);
        write(&memory, "memory.limit_in_bytes", "2000\n");
        assert_eq!(cgroup_room_at(&v1, v1_text), Some(1700));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A model no machine holds is refused naming `model`; a micro-batch no machine holds names
    /// `train.micro_batch`; the tiny preset passes (where /proc/meminfo exists).
    #[test]
    fn what_cannot_fit_is_refused_by_its_key() {
        assert!(check_training(&tiny(&[])).is_ok());
        if available().is_none() {
            return;
        }
        let err = check_training(&tiny(&["model.n_layers=1000000000"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = err.to_string();
        assert!(
            err.contains("`model`") && err.contains("make the model smaller"),
            "{err}"
        );
        let err = check_training(&tiny(&["train.micro_batch=1000000000000"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`train.micro_batch`") && err.contains("GiB"),
            "{err}"
        );
    }
}
