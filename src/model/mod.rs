//! The Grok-1 architecture, single-device and parallelism-agnostic: each file pairs an `XConfig`
//! with the `X` it builds.

pub mod attention;
pub mod block;
pub mod combine;
pub mod embedding;
pub mod experts;
pub mod flash;
pub mod fused;
pub mod gemv;
pub mod grok;
pub mod init;
pub mod moe;
pub mod norm;
pub mod params;
pub mod precision;
pub mod rope;
pub mod rows;
pub mod shared_half;
pub mod stand_in_routing;
pub mod wide;

pub use grok::{Grok, GrokConfig, GrokOutput};

/// Run `f` with the thread-local switch `key` set to `value`, then put the old value back: how
/// `fused::plain_scope` and `precision::autocast` scope their per-thread modes.
fn scoped<T: Copy, R>(
    key: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    let before = key.with(|c| c.replace(value));
    let out = f();
    key.with(|c| c.set(before));
    out
}
