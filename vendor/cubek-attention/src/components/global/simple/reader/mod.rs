mod mask;
mod query;

pub use mask::*;
pub use query::*;
