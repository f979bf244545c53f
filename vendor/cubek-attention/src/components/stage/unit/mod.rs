mod attention;
mod setup;

pub use attention::*;
pub use setup::*;
