//! The Grok-1 architecture, single-device and parallelism-agnostic: each file pairs an `XConfig`
//! with the `X` it builds.

pub mod attention;
pub mod block;
pub mod fused;
pub mod grok;
pub mod init;
pub mod moe;
pub mod norm;
pub mod params;
pub mod precision;
pub mod rope;

pub use grok::{Grok, GrokConfig, GrokOutput};
