//! Rotating rounds and the statistics of their ratios.
//!
//! A shared machine's speed drifts within seconds, so a comparison runs every contender
//! once per round, in an order that rotates from round to round, and reports the
//! median of the per-round ratios with their min and max.

/// Runs `contenders` for `rounds` rounds, rotating their order; returns each
/// contender's measurement per round, in the contenders' order.
pub fn rotate<T>(rounds: usize, contenders: usize, mut run: impl FnMut(usize) -> T) -> Vec<Vec<T>> {
    let mut results: Vec<Vec<T>> = (0..contenders).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for k in 0..contenders {
            let which = (round + k) % contenders;
            results[which].push(run(which));
        }
    }
    results
}

/// Median, min and max of a non-empty list.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "a spread of nothing");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }

    /// The per-round ratios `a[i] / b[i]`.
    pub fn of_ratios(a: &[f64], b: &[f64]) -> Spread {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        Spread::of(&ratios)
    }
}

impl Spread {
    /// `median (min–max)` with `decimals` digits after the point.
    pub fn show(&self, decimals: usize) -> String {
        format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = decimals)
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.show(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_runs_everyone_once_per_round_in_turn() {
        let mut order = Vec::new();
        let results = rotate(3, 3, |k| {
            order.push(k);
            k * 10
        });
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(results, [vec![0, 0, 0], vec![10, 10, 10], vec![20, 20, 20]]);
    }

    #[test]
    fn spread_of_ratios() {
        let s = Spread::of_ratios(&[2.0, 3.0, 8.0, 1.0], &[1.0, 1.0, 2.0, 1.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }
}
