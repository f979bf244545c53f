//! Dynamic loss scaling for `precision: f16` (torch.amp.GradScaler's rule). f16's smallest
//! normal number is 6.1e-5 (bf16's is 1.2e-38, as f32's), so gradients passing through the f16
//! matrix products' backward would underflow to zero: the loss is multiplied by the scale before
//! the backward and the gradients divided by it afterwards. Too large a scale overflows instead
//! (f16 stops at 65 504): that step's update is skipped and the scale halved. After
//! `growth_interval` clean steps in a row it doubles again, to find the largest safe scale.
//!
//! The scale is a power of two, so scaling and unscaling change no bit of an f32 gradient. It is
//! part of exact resume (`checkpoint::state`): a resumed run continues with the scale and the
//! count of clean steps it had.

use serde::{Deserialize, Serialize};

/// The largest scale is 2^MAX_LOG2 (config checks `train.loss_scale_init` against it). No
/// gradient needs more; the bound only keeps a run of clean steps from growing it forever.
pub const MAX_LOG2: i32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossScale {
    /// The scale is 2^log2, from 1 (2⁰) to 2^MAX_LOG2.
    pub log2: i32,
    /// Steps in a row with finite gradients since the scale last changed.
    pub clean_steps: u64,
}

/// What `LossScale::update` did after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Finite gradients, scale unchanged.
    Kept,
    /// Finite gradients, and the growth interval is complete: the scale doubled.
    Grew,
    /// Non-finite gradients: the scale halved (the step is to be skipped).
    Halved,
    /// Non-finite gradients at scale 1: nothing left to halve, so the overflow is not the
    /// scale's doing and the run is diverging (the step counts against
    /// `train.max_nonfinite_steps`).
    AtFloor,
}

impl LossScale {
    /// The scale `init` (a power of two from 1 to 2^MAX_LOG2, as config validation ensures).
    pub fn new(init: f64) -> Self {
        LossScale {
            log2: (init.log2().round() as i32).clamp(0, MAX_LOG2),
            clean_steps: 0,
        }
    }

    /// The factor the loss is multiplied by.
    pub fn factor(&self) -> f64 {
        2f64.powi(self.log2)
    }

    /// Account for one step whose gradients were `finite` or not.
    pub fn update(&mut self, finite: bool, growth_interval: usize) -> Update {
        if !finite {
            self.clean_steps = 0;
            if self.log2 == 0 {
                return Update::AtFloor;
            }
            self.log2 -= 1;
            return Update::Halved;
        }
        self.clean_steps += 1;
        if self.clean_steps >= growth_interval as u64 && self.log2 < MAX_LOG2 {
            self.log2 += 1;
            self.clean_steps = 0;
            return Update::Grew;
        }
        Update::Kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_configured_power_of_two() {
        assert_eq!(LossScale::new(65536.0).factor(), 65536.0);
        assert_eq!(LossScale::new(1.0).log2, 0);
    }

    #[test]
    fn overflow_halves_clean_intervals_double_and_the_floor_is_divergence() {
        let mut s = LossScale::new(4.0);
        // An overflow halves the scale and restarts the count of clean steps.
        assert_eq!(s.update(true, 3), Update::Kept);
        assert_eq!(s.update(false, 3), Update::Halved);
        assert_eq!((s.factor(), s.clean_steps), (2.0, 0));
        // Three clean steps in a row double it, and the count starts again.
        assert_eq!(s.update(true, 3), Update::Kept);
        assert_eq!(s.update(true, 3), Update::Kept);
        assert_eq!(s.update(true, 3), Update::Grew);
        assert_eq!((s.factor(), s.clean_steps), (4.0, 0));
        // Down to 1, where an overflow is the run's own.
        assert_eq!(s.update(false, 3), Update::Halved);
        assert_eq!(s.update(false, 3), Update::Halved);
        assert_eq!(s.factor(), 1.0);
        assert_eq!(s.update(false, 3), Update::AtFloor);
        assert_eq!(s.factor(), 1.0);
    }

    #[test]
    fn growth_stops_at_the_ceiling() {
        let mut s = LossScale::new(2f64.powi(MAX_LOG2));
        assert_eq!(s.update(true, 1), Update::Kept);
        assert_eq!(s.log2, MAX_LOG2);
    }
}
