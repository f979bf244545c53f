pub mod simple;

mod base;
mod layout;

pub use base::*;
pub use layout::*;
