mod mask;
mod operand;
mod output;
mod softmax;

pub use mask::*;
pub use operand::*;
pub use output::*;
pub use softmax::*;
