//! The rhythm of one stream's timestamps: its usual interval, how much the intervals
//! wander (jitter), and the gaps where frames or samples are missing.

use serde::Serialize;

/// A hole in a stream: `length_s` from the frame at `at_s` to the next one, `missing`
/// frames (or samples) of the usual interval fitting in between.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    pub at_s: f64,
    pub length_s: f64,
    pub missing: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timing {
    /// The median interval (ms); `None` with fewer than two timestamps.
    pub interval_ms: Option<f64>,
    /// Standard deviation of the intervals outside gaps (ms).
    pub jitter_ms: Option<f64>,
    pub max_interval_ms: Option<f64>,
    pub gaps: Vec<Gap>,
    /// Frames (samples) missing in all gaps.
    pub missing: u64,
}

/// An interval longer than this many usual intervals is a gap (a frame or more is
/// missing there); shorter ones are jitter.
const GAP_FACTOR: f64 = 1.5;

/// The timing of `times_us` (µs, any order).
pub fn timing(times_us: &[i64]) -> Timing {
    let mut times = times_us.to_vec();
    times.sort_unstable();
    let intervals: Vec<(i64, i64)> = times.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
    let mut sorted: Vec<i64> = intervals.iter().map(|&(_, d)| d).collect();
    sorted.sort_unstable();
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return Timing::default();
    };
    let usual = median.max(1) as f64;
    let mut gaps = Vec::new();
    let mut regular = Vec::new();
    for &(at, length) in &intervals {
        if length as f64 > usual * GAP_FACTOR {
            let missing = ((length as f64 / usual).round() as u64).saturating_sub(1);
            gaps.push(Gap {
                at_s: seconds(at),
                length_s: seconds(length),
                missing,
            });
        } else {
            regular.push(length as f64);
        }
    }
    let mean = regular.iter().sum::<f64>() / regular.len().max(1) as f64;
    let variance =
        regular.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / regular.len().max(1) as f64;
    Timing {
        interval_ms: Some(median as f64 / 1000.0),
        jitter_ms: Some(variance.sqrt() / 1000.0),
        max_interval_ms: sorted.last().map(|&d| d as f64 / 1000.0),
        missing: gaps.iter().map(|g| g.missing).sum(),
        gaps,
    }
}

/// µs as seconds.
pub fn seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hole_of_ten_frames_is_one_gap_and_steady_frames_have_no_jitter() {
        let times: Vec<i64> = (0..50)
            .filter(|i| !(20..30).contains(i))
            .map(|i| i * 40_000)
            .collect();
        let t = timing(&times);
        assert_eq!(t.interval_ms, Some(40.0));
        assert_eq!(t.jitter_ms, Some(0.0));
        assert_eq!(t.max_interval_ms, Some(440.0));
        assert_eq!(
            t.gaps,
            vec![Gap {
                at_s: 0.76,
                length_s: 0.44,
                missing: 10
            }]
        );
        assert_eq!(t.missing, 10);
    }

    #[test]
    fn intervals_that_wander_are_jitter_not_gaps() {
        // 30 fps stored in whole ms: 33, 33, 34, …
        let times: Vec<i64> = (0..90).map(|i| i * 1_000_000 / 30 / 1000 * 1000).collect();
        let t = timing(&times);
        assert!(t.gaps.is_empty());
        let jitter = t.jitter_ms.unwrap();
        assert!(jitter > 0.3 && jitter < 0.6, "{jitter}");
        assert_eq!(timing(&[5]), Timing::default());
    }
}
