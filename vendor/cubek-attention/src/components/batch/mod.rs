pub mod simple;

mod base;
mod entry_point;

pub use base::*;
