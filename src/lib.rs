//! Colossus: train Grok-1-architecture language models in pure Rust on CPU, wgpu and CUDA.

pub mod backend;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod dist;
pub mod error;
pub mod generate;
pub mod model;
pub mod plan;
pub mod plot;
pub mod replace;
pub mod rng;
pub mod say;
pub mod train;

pub use error::{Error, Result};
