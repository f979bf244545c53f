//! Run configuration: the YAML file format, named presets, and validation into a resolved `Config`.

pub mod file;
pub mod preset;
pub mod resolve;

pub use file::{AttentionKernel, BackendKind, Precision, PresetName};
pub use resolve::{
    Config, DataConfig, DistributedConfig, Resume, Source, TrainConfig, ffn_size, from_yaml, load,
};
