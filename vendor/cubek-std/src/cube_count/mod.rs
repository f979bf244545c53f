mod hypercube;
mod spread;

pub use hypercube::*;
pub use spread::*;
