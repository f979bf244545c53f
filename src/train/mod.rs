//! Training: the loop, its optimizer, gradients, schedule, loss and progress reporting.

pub mod eval;
pub mod fits;
pub mod grads;
pub mod loss;
pub mod loss_scale;
pub mod mfu;
pub mod optim;
pub mod params;
pub mod progress;
pub mod resume;
pub mod schedule;
pub mod trainer;

pub use trainer::{TrainOptions, TrainSummary, train};
