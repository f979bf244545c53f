mod args;
mod base;
mod tune_key;

pub use args::*;
pub use base::*;
pub use tune_key::*;
