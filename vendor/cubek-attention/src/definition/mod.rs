mod base;
mod blueprint;
mod error;
mod hypercube;
mod spec;
mod vectorization;

pub use base::*;
pub use blueprint::*;
pub use error::*;
pub use hypercube::*;
pub use spec::*;
pub use vectorization::*;
