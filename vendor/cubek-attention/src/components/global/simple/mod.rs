mod attention;
mod config;
mod reader;
mod setup;
mod writer;

pub use attention::*;
pub use reader::*;
pub use setup::SimpleGlobalAttentionFamily;
pub use writer::*;
