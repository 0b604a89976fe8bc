//! Measuring a signal's dominant frequency, without an FFT.
//!
//! A Goertzel filter gives the power of one frequency over a window. The
//! estimate is found in stages: a coarse scan of every bin of a short
//! (2048-sample) Hann-windowed window, then finer grids over longer windows
//! around the best candidate, and finally a parabolic fit through the three
//! best points of the longest window. On a clean sine it is accurate to a
//! few hundredths of a hertz with one second of audio; Opus coding noise
//! moves it by far less than 0.5%.

/// Below this RMS (about -70 dBFS) a signal counts as silence: a codec's
/// or a microphone's noise floor has no meaningful dominant frequency.
pub const SILENCE_RMS: f64 = 10.0;
/// Fewest samples `dominant_frequency_hz` works with.
pub const MIN_SAMPLES: usize = 1_024;
/// Coarse scan window.
const COARSE: usize = 2_048;
/// Refinement windows (each used when the signal is at least this long).
const REFINE: [usize; 2] = [8_192, 32_768];
/// Lowest frequency the coarse scan reports, in coarse bins (skips DC).
const FIRST_BIN: usize = 2;

/// The frequency (Hz) with the most power in `samples` (mono, at `rate`
/// Hz), or `None` when there are fewer than [`MIN_SAMPLES`] samples or the
/// signal is silence.
pub fn dominant_frequency_hz(samples: &[i16], rate: u32) -> Option<f64> {
    if samples.len() < MIN_SAMPLES || rate == 0 {
        return None;
    }
    let rate = f64::from(rate);
    let mean = samples.iter().map(|&s| f64::from(s)).sum::<f64>() / samples.len() as f64;
    let x: Vec<f64> = samples.iter().map(|&s| f64::from(s) - mean).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
    if rms < SILENCE_RMS {
        return None;
    }

    // Coarse: every bin of the last COARSE samples.
    let n = COARSE.min(x.len());
    let w = windowed(&x[x.len() - n..]);
    let bin = rate / n as f64;
    let (mut best, _) = (FIRST_BIN..n / 2)
        .map(|k| {
            let f = k as f64 * bin;
            (f, goertzel_power(&w, f / rate))
        })
        .fold((0.0, f64::MIN), |m, c| if c.1 > m.1 { c } else { m });
    let mut span = 2.0 * bin;

    // Finer grids over longer windows, ending with all of the signal.
    let mut sizes: Vec<usize> = REFINE.iter().copied().filter(|&s| s < x.len()).collect();
    sizes.push(x.len());
    let mut last_step = 0.0;
    let mut last_w: Option<Vec<f64>> = None;
    for size in sizes {
        let w = windowed(&x[x.len() - size..]);
        let step = rate / size as f64 / 4.0;
        let steps = (span / step).ceil() as i64;
        let (f, _) = (-steps..=steps)
            .map(|i| best + i as f64 * step)
            .filter(|&f| f > 0.0 && f < rate / 2.0)
            .map(|f| (f, goertzel_power(&w, f / rate)))
            .fold((best, f64::MIN), |m, c| if c.1 > m.1 { c } else { m });
        best = f;
        span = 2.0 * rate / size as f64;
        last_step = step;
        last_w = Some(w);
    }

    // Parabolic fit on log power through the best point and its neighbours.
    if let Some(w) = last_w {
        let p = |f: f64| goertzel_power(&w, f / rate).max(f64::MIN_POSITIVE).ln();
        let (a, b, c) = (p(best - last_step), p(best), p(best + last_step));
        let den = a - 2.0 * b + c;
        if den < 0.0 {
            let offset = 0.5 * (a - c) / den;
            if offset.abs() <= 1.0 {
                best += offset * last_step;
            }
        }
    }
    Some(best)
}

/// The samples times a Hann window.
fn windowed(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    if n < 2 {
        return x.to_vec();
    }
    let k = std::f64::consts::TAU / (n - 1) as f64;
    x.iter()
        .enumerate()
        .map(|(i, v)| v * (0.5 - 0.5 * (k * i as f64).cos()))
        .collect()
}

/// Power of normalised frequency `f` (cycles per sample) in `x`.
fn goertzel_power(x: &[f64], f: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * f).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|k| {
                (amp * (std::f64::consts::TAU * hz * k as f64 / f64::from(rate) + 0.3).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn finds_clean_sines_within_a_tenth_of_a_percent() {
        for hz in [100.0, 440.0, 997.3, 1000.0, 3_150.0, 12_000.0] {
            for n in [2_048, 4_800, 48_000] {
                let got = dominant_frequency_hz(&sine(hz, 48_000, n, 9_830.0), 48_000).unwrap();
                let tol = if n >= 4_800 { hz * 0.001 } else { hz * 0.005 };
                assert!((got - hz).abs() < tol.max(0.5), "{hz} Hz over {n}: {got}");
            }
        }
    }

    #[test]
    fn finds_the_loudest_of_two_and_survives_noise() {
        let a = sine(440.0, 48_000, 48_000, 8_000.0);
        let b = sine(1_500.0, 48_000, 48_000, 2_000.0);
        let mut seed = 1u32;
        let mixed: Vec<i16> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = i32::from((seed >> 16) as i16) / 16;
                (i32::from(*x) + i32::from(*y) + noise).clamp(-32_768, 32_767) as i16
            })
            .collect();
        let got = dominant_frequency_hz(&mixed, 48_000).unwrap();
        assert!((got - 440.0).abs() < 0.5, "{got}");
    }

    #[test]
    fn none_for_short_or_silent_input() {
        assert_eq!(dominant_frequency_hz(&[0; 48_000], 48_000), None);
        assert_eq!(
            dominant_frequency_hz(&[300; 48_000], 48_000),
            None,
            "DC is silence"
        );
        assert_eq!(
            dominant_frequency_hz(&sine(440.0, 48_000, 1_000, 9_000.0), 48_000),
            None
        );
        assert_eq!(
            dominant_frequency_hz(&sine(440.0, 48_000, 4_000, 9_000.0), 0),
            None
        );
    }

    #[test]
    fn other_rates_work() {
        let got = dominant_frequency_hz(&sine(440.0, 16_000, 16_000, 9_000.0), 16_000).unwrap();
        assert!((got - 440.0).abs() < 0.5, "{got}");
    }
}
