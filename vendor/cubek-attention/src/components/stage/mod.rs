pub mod plane;
pub mod unit;

mod base;
mod partition;
mod partition_attention;
mod partitioner;

pub use base::*;
pub use partition::*;
pub use partitioner::*;
