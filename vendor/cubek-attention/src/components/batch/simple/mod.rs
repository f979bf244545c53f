mod attention;
mod config;
mod setup;

pub use attention::*;
pub use setup::SimpleBatchAttentionFamily;
