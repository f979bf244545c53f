//! The hardware table `colossus plan` sizes runs against: per-GPU peak bf16 throughput, memory,
//! power, and the two links (NVLink inside a node, RDMA between nodes).
//!
//! Every number is a vendor datasheet figure (SXM parts), not a measurement; docs/plan.md lists
//! the sources and what each one is used for.

use std::fmt;

/// GPUs per node on every system in the table (HGX/DGX boards: 8 SXM GPUs on one NVLink domain).
pub const GPUS_PER_NODE: usize = 8;

/// Inter-node bandwidth per GPU, GB/s per direction: one 400 Gb/s NIC (InfiniBand NDR or RoCE)
/// per GPU, the rail-optimised layout of DGX/HGX clusters. 400 Gb/s = 50 GB/s.
pub const INTER_NODE_GB_S: f64 = 50.0;

/// Whole-facility power over GPU power (power usage effectiveness plus the host CPUs, NICs,
/// switches and storage that the GPU figure leaves out). 1.3 is a round figure between a modern
/// liquid-cooled hall (PUE ≈ 1.1–1.2, plus ≈ 10% non-GPU IT load) and an air-cooled one.
pub const FACILITY_OVERHEAD: f64 = 1.3;

/// Share of GPU memory the plan lets a run use. The rest is for what the formulas do not count:
/// the CUDA context, NCCL buffers, temporary workspaces and allocator fragmentation.
pub const USABLE_MEMORY_FRACTION: f64 = 0.9;

/// The GPUs `--gpu` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpu {
    H100,
    H200,
    B200,
}

/// One row of the hardware table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    /// Dense (no 2:4 sparsity) bf16 tensor-core peak, TFLOP/s. MFU is measured against this.
    pub peak_bf16_tflops: f64,
    /// Dense tf32 tensor-core peak, TFLOP/s: the rate of f32 matrix products on the tensor cores
    /// (cubek runs f32 matmuls as tf32 there), `colossus bench`'s MFU denominator at f32.
    pub peak_tf32_tflops: f64,
    /// Plain fp32 (CUDA cores, no tensor cores) peak, TFLOP/s, for reference.
    pub peak_f32_tflops: f64,
    /// HBM capacity, GB (10⁹ bytes).
    pub memory_gb: f64,
    /// NVLink bandwidth per GPU, GB/s per direction.
    pub nvlink_gb_s: f64,
    /// Board power (TDP), watts.
    pub watts: f64,
}

impl Gpu {
    /// `h100`, `h200` or `b200`, any case.
    pub fn parse(name: &str) -> Option<Gpu> {
        match name.to_ascii_lowercase().as_str() {
            "h100" => Some(Gpu::H100),
            "h200" => Some(Gpu::H200),
            "b200" => Some(Gpu::B200),
            _ => None,
        }
    }

    /// The table's row for a GPU as its driver names it (`nvidia-smi`'s name: "NVIDIA H100 80GB
    /// HBM3", "NVIDIA H200", "NVIDIA B200"), or `None` for any other part. The PCIe and NVL cards
    /// of the same chips run at lower clocks and power, so their peaks are not these.
    pub fn from_device_name(name: &str) -> Option<Gpu> {
        let n = name.to_ascii_uppercase();
        if n.contains("PCIE") || n.contains("NVL") {
            return None;
        }
        if n.contains("H100") && n.contains("HBM3") {
            Some(Gpu::H100)
        } else if n.contains("H200") {
            Some(Gpu::H200)
        } else if n.contains("B200") {
            Some(Gpu::B200)
        } else {
            None
        }
    }

    /// The `--gpu` value that names it.
    pub fn flag_value(self) -> &'static str {
        match self {
            Gpu::H100 => "h100",
            Gpu::H200 => "h200",
            Gpu::B200 => "b200",
        }
    }

    pub fn spec(self) -> GpuSpec {
        match self {
            // H100 SXM5: 989.4 TFLOP/s dense bf16 (494.7 tf32, 66.9 fp32), 80 GB HBM3, NVLink 4
            // at 900 GB/s bidirectional.
            Gpu::H100 => GpuSpec {
                name: "H100 SXM",
                peak_bf16_tflops: 989.0,
                peak_tf32_tflops: 494.7,
                peak_f32_tflops: 66.9,
                memory_gb: 80.0,
                nvlink_gb_s: 450.0,
                watts: 700.0,
            },
            // H200 SXM: the H100 die with 141 GB HBM3e; compute and NVLink unchanged.
            Gpu::H200 => GpuSpec {
                name: "H200 SXM",
                peak_bf16_tflops: 989.0,
                peak_tf32_tflops: 494.7,
                peak_f32_tflops: 66.9,
                memory_gb: 141.0,
                nvlink_gb_s: 450.0,
                watts: 700.0,
            },
            // B200 (HGX B200 board): 2.25 PFLOP/s dense bf16 (1.1 tf32, 75 TFLOP/s fp32), 192 GB
            // HBM3e, NVLink 5 at 1.8 TB/s bidirectional, 1000 W.
            Gpu::B200 => GpuSpec {
                name: "B200",
                peak_bf16_tflops: 2250.0,
                peak_tf32_tflops: 1100.0,
                peak_f32_tflops: 75.0,
                memory_gb: 192.0,
                nvlink_gb_s: 900.0,
                watts: 1000.0,
            },
        }
    }
}

/// Which wire a parallel group's collectives run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The group lives inside one node.
    NvLink,
    /// The group spans nodes; its ring is bounded by each GPU's own NIC.
    InterNode,
}

impl Link {
    /// Ranks are numbered tp fastest, then ep, then the rest of dp, then pp (Megatron's order), so
    /// a group occupies `span` consecutive ranks. It stays inside a node when the span fits in one
    /// and tiles nodes evenly, or when the whole run is one node.
    pub fn for_span(span: usize, gpus: usize) -> Link {
        if gpus <= GPUS_PER_NODE || (span <= GPUS_PER_NODE && GPUS_PER_NODE.is_multiple_of(span)) {
            Link::NvLink
        } else {
            Link::InterNode
        }
    }

    /// GB/s per direction available to one GPU.
    pub fn gb_per_s(self, gpu: &GpuSpec) -> f64 {
        match self {
            Link::NvLink => gpu.nvlink_gb_s,
            Link::InterNode => INTER_NODE_GB_S,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::NvLink => "NVLink",
            Link::InterNode => "inter-node",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_documented_figures() {
        for (name, expected) in [
            ("H100", (989.0, 80.0, 450.0, 700.0)),
            ("h200", (989.0, 141.0, 450.0, 700.0)),
            ("b200", (2250.0, 192.0, 900.0, 1000.0)),
        ] {
            let g = Gpu::parse(name).unwrap().spec();
            let got = (g.peak_bf16_tflops, g.memory_gb, g.nvlink_gb_s, g.watts);
            assert_eq!(got, expected, "{name}");
        }
        assert_eq!(Gpu::parse("a100"), None);
        // tf32 is half the bf16 rate on both generations.
        for g in [Gpu::H100, Gpu::H200, Gpu::B200] {
            let s = g.spec();
            assert!(
                (s.peak_bf16_tflops / s.peak_tf32_tflops - 2.0).abs() < 0.05,
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn driver_names_map_to_the_sxm_rows_only() {
        for (name, gpu) in [
            ("NVIDIA H100 80GB HBM3", Some(Gpu::H100)),
            ("NVIDIA H200", Some(Gpu::H200)),
            ("NVIDIA B200", Some(Gpu::B200)),
            ("NVIDIA H100 PCIe", None),
            ("NVIDIA H100 NVL", None),
            ("NVIDIA H200 NVL", None),
            ("NVIDIA A100-SXM4-80GB", None),
            ("NVIDIA GeForce RTX 4090", None),
        ] {
            assert_eq!(Gpu::from_device_name(name), gpu, "{name}");
        }
        // 400 Gb/s ÷ 8 bits per byte.
        assert_eq!(INTER_NODE_GB_S, 400.0 / 8.0);
    }

    #[test]
    fn groups_inside_a_node_use_nvlink() {
        assert_eq!(Link::for_span(8, 1024), Link::NvLink);
        assert_eq!(Link::for_span(4, 1024), Link::NvLink);
        assert_eq!(Link::for_span(16, 1024), Link::InterNode);
        // 3 consecutive ranks straddle a node boundary somewhere in a multi-node run.
        assert_eq!(Link::for_span(3, 24), Link::InterNode);
        // A one-node run never leaves the node.
        assert_eq!(Link::for_span(6, 6), Link::NvLink);
        assert_eq!(Link::InterNode.gb_per_s(&Gpu::B200.spec()), 50.0);
        assert_eq!(Link::NvLink.gb_per_s(&Gpu::B200.spec()), 900.0);
    }
}
