pub mod batch;
pub mod global;
pub mod stage;
pub mod tile;
