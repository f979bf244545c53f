#![allow(clippy::explicit_counter_loop, clippy::type_complexity)]

/// Components for matrix multiplication
pub mod components;
pub mod launch;
/// Contains attention kernels
pub mod routines;

pub mod definition;

#[cfg(feature = "cpu-reference")]
pub mod cpu_reference;
