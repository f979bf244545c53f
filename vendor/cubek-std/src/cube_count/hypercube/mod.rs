mod blueprint;
mod builder;
mod cube_count;
mod cube_mapping;
mod global_order;
mod sm_allocation;

pub use blueprint::HypercubeBlueprint;
pub use cube_count::*;
pub use cube_mapping::{CubeMapping, CubeMappingLaunch, cube_mapping_launch};
pub use global_order::{GlobalOrder, swizzle};
pub use sm_allocation::SmAllocation;
