//! Data-parallel training on burn's collective engine (burn-collective): every rank holds a full
//! replica, takes its own slice of each global micro-batch, and the ranks average gradients with
//! `all_reduce` before clipping and the optimizer step, so W ranks train exactly like one rank with
//! the whole batch. Ranks are threads of one process (burn's local server) and/or processes on
//! several machines (burn's global orchestrator, hosted by rank 0's process, over WebSocket).
//! The model and the training loop know nothing of this beyond the `Dist` handle they are given.

pub mod agree;
pub mod comm;
pub mod env;
pub mod launch;
pub mod split;
pub mod watchdog;
pub mod workers;
pub mod zero;

pub use comm::Dist;
pub use launch::run;
