pub mod matmul;

mod attention;
mod mask;
mod operand;

pub use attention::*;
pub use mask::*;
pub use operand::*;
