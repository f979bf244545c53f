//! Learning rate: linear warmup from lr/warmup to lr, then cosine decay to `min_lr` at the last step.

use crate::config::TrainConfig;

/// Learning rate for optimizer step `step` (0-based).
pub fn lr_at(t: &TrainConfig, step: usize) -> f64 {
    if step < t.warmup_steps {
        return t.lr * (step + 1) as f64 / t.warmup_steps as f64;
    }
    let span = t.steps.saturating_sub(t.warmup_steps).saturating_sub(1).max(1);
    let progress = ((step - t.warmup_steps) as f64 / span as f64).min(1.0);
    t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml;

    #[test]
    fn warmup_then_cosine_to_floor() {
        let c = from_yaml(
            "preset: tiny\ntrain: {steps: 110, warmup_steps: 10, lr: 1.0, min_lr: 0.1}\n",
            "t",
            &[],
        )
        .unwrap()
        .train;
        assert!((lr_at(&c, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&c, 9) - 1.0).abs() < 1e-12);
        assert!((lr_at(&c, 10) - 1.0).abs() < 1e-12);
        // Halfway through the decay the cosine is at the midpoint.
        assert!((lr_at(&c, 10 + 99 / 2) - 0.55).abs() < 0.01);
        assert!((lr_at(&c, 109) - 0.1).abs() < 1e-12);
        let lrs: Vec<f64> = (10..110).map(|s| lr_at(&c, s)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }
}
