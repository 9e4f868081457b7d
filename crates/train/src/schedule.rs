//! Learning-rate schedules as pure functions of the step and the plateau state, so a resumed run
//! recomputes the same rate.

use crate::preset::Schedule;

/// The learning rate at `step` (0-based) of `total_steps`, given the peak rate and the plateau
/// multiplier accumulated so far.
pub(crate) fn lr_at(
    schedule: &Schedule,
    peak: f32,
    step: u64,
    total_steps: u64,
    plateau: f32,
) -> f32 {
    match *schedule {
        Schedule::Constant => peak,
        Schedule::Plateau { min_lr, .. } => (peak * plateau).max(min_lr),
        Schedule::Cosine {
            warmup_steps,
            min_lr,
        } => {
            if step < warmup_steps {
                return peak * (step + 1) as f32 / warmup_steps as f32;
            }
            let span = total_steps.saturating_sub(warmup_steps).max(1);
            let progress = ((step - warmup_steps) as f64 / span as f64).min(1.0);
            let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            min_lr + (peak - min_lr) * cos as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays_to_the_floor() {
        let s = Schedule::Cosine {
            warmup_steps: 10,
            min_lr: 0.1,
        };
        assert!((lr_at(&s, 1.0, 0, 110, 1.0) - 0.1).abs() < 1e-6);
        assert!((lr_at(&s, 1.0, 9, 110, 1.0) - 1.0).abs() < 1e-6);
        assert!((lr_at(&s, 1.0, 60, 110, 1.0) - 0.55).abs() < 1e-3);
        assert!((lr_at(&s, 1.0, 110, 110, 1.0) - 0.1).abs() < 1e-6);
        let mut prev = f32::INFINITY;
        for step in 10..110 {
            let lr = lr_at(&s, 1.0, step, 110, 1.0);
            assert!(lr <= prev);
            prev = lr;
        }
    }

    #[test]
    fn plateau_applies_the_multiplier_with_a_floor() {
        let s = Schedule::Plateau {
            factor: 0.5,
            patience: 1,
            min_lr: 0.2,
        };
        assert_eq!(lr_at(&s, 1.0, 5, 10, 0.5), 0.5);
        assert_eq!(lr_at(&s, 1.0, 5, 10, 0.125), 0.2);
        assert_eq!(lr_at(&Schedule::Constant, 0.3, 5, 10, 0.1), 0.3);
    }
}
