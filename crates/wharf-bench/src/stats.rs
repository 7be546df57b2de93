//! Summaries of repeated measurements: median with min–max, and ratios to a ceiling.

use serde::{Deserialize, Serialize};

/// The median and range of one figure over the repeats of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there are none (or any is NaN).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            sorted[mid - 1..=mid].iter().sum::<f64>() / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// `figure / ceiling`, or `None` when the ceiling is not a positive finite number.
pub fn ratio(figure: f64, ceiling: f64) -> Option<f64> {
    (ceiling.is_finite() && ceiling > 0.0 && figure.is_finite()).then(|| figure / ceiling)
}

/// Decimal megabytes per second (10^6 bytes), the unit every bandwidth figure uses.
pub fn mb_per_sec(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_value() {
        assert_eq!(
            Summary::of(&[3.0, 1.0, 2.0]),
            Some(Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_pair() {
        assert_eq!(
            Summary::of(&[4.0, 1.0, 2.0, 10.0]),
            Some(Summary {
                median: 3.0,
                min: 1.0,
                max: 10.0
            })
        );
    }

    #[test]
    fn a_single_value_is_its_own_median_and_range() {
        assert_eq!(
            Summary::of(&[7.5]),
            Some(Summary {
                median: 7.5,
                min: 7.5,
                max: 7.5
            })
        );
    }

    #[test]
    fn no_values_or_nan_give_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_divides_by_a_positive_ceiling_only() {
        assert_eq!(ratio(50.0, 200.0), Some(0.25));
        assert_eq!(ratio(50.0, 0.0), None);
        assert_eq!(ratio(50.0, f64::INFINITY), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
    }

    #[test]
    fn megabytes_are_decimal() {
        assert!((mb_per_sec(3_000_000, 2.0) - 1.5).abs() < 1e-12);
        assert!(mb_per_sec(1, 0.0).abs() < f64::EPSILON);
    }
}
