//! Rate and channel conversion for capture devices that cannot give what
//! Opus wants (48 kHz, the configured channels) and have no ALSA plug layer
//! in front of them.
//!
//! The resampler is linear interpolation with exact rational stepping: the
//! position of every output frame is `k * from / to` input frames, kept as an
//! integer fraction, so a long stream neither drifts nor gains or loses
//! frames (`to/from` output frames per input frame, exactly, on average).
//! It has no anti-alias filter: fine for the usual upward cases (16 kHz or
//! 44.1 kHz microphones to 48 kHz), rough for downsampling.

/// A streaming linear resampler for interleaved i16 audio.
#[derive(Clone, Debug)]
pub struct LinearResampler {
    from: u64,
    to: u64,
    channels: usize,
    /// Position of the next output frame, in units of 1/`to` input frames,
    /// counted from `last` (index 0); the next input's frames are 1..=n.
    t: u64,
    /// The last frame of the previous input (empty before the first input).
    last: Vec<i16>,
}

impl LinearResampler {
    /// Converts `from` Hz to `to` Hz for `channels` interleaved channels.
    /// Zero rates or channels are treated as 1.
    pub fn new(from: u32, to: u32, channels: u16) -> Self {
        let (from, to) = (u64::from(from.max(1)), u64::from(to.max(1)));
        let g = gcd(from, to);
        LinearResampler {
            from: from / g,
            to: to / g,
            channels: usize::from(channels.max(1)),
            t: 0,
            last: Vec::new(),
        }
    }

    /// Forgets the stream so far (after a gap in the input).
    pub fn reset(&mut self) {
        self.t = 0;
        self.last.clear();
    }

    /// Appends the resampled `input` (interleaved, whole frames; a trailing
    /// partial frame is ignored) to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let ch = self.channels;
        let n = input.len() / ch;
        if n == 0 {
            return;
        }
        if self.last.is_empty() {
            // Start the stream on the first input frame.
            self.last.extend_from_slice(&input[..ch]);
            self.t = self.to;
        }
        // Frame `i` of the virtual stream: 0 is `last`, 1..=n are the input's.
        let frame = |i: usize| -> &[i16] {
            if i == 0 {
                &self.last
            } else {
                &input[(i - 1) * ch..i * ch]
            }
        };
        let reserve = (n as u64 * self.to / self.from + 2) as usize * ch;
        out.reserve(reserve);
        loop {
            let i = (self.t / self.to) as usize;
            let frac = (self.t % self.to) as i64;
            if i > n || (i == n && frac != 0) {
                break;
            }
            if frac == 0 {
                out.extend_from_slice(frame(i));
            } else {
                let (a, b) = (frame(i), frame(i + 1));
                let den = self.to as i64;
                for c in 0..ch {
                    let (a, b) = (i64::from(a[c]), i64::from(b[c]));
                    // Rounded to nearest; stays within [min(a,b), max(a,b)].
                    let v = a + ((b - a) * frac * 2 + den).div_euclid(2 * den);
                    out.push(v as i16);
                }
            }
            self.t += self.from;
        }
        // Re-base on the input's last frame.
        self.t -= n as u64 * self.to;
        self.last.clear();
        self.last.extend_from_slice(&input[(n - 1) * ch..n * ch]);
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Converts interleaved audio from `from` to `to` channels: averages down to
/// mono, duplicates mono up, otherwise maps channel `c` to `c % from`.
pub fn convert_channels(input: &[i16], from: u16, to: u16) -> Vec<i16> {
    let (from, to) = (usize::from(from.max(1)), usize::from(to.max(1)));
    if from == to {
        return input.to_vec();
    }
    let frames = input.chunks_exact(from);
    let mut out = Vec::with_capacity(frames.len() * to);
    for f in frames {
        if to == 1 {
            let sum: i32 = f.iter().map(|&s| i32::from(s)).sum();
            out.push((sum / from as i32) as i16);
        } else {
            out.extend((0..to).map(|c| f[c % from]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, frames: usize) -> Vec<i16> {
        (0..frames)
            .map(|k| {
                (10_000.0 * (std::f64::consts::TAU * hz * k as f64 / f64::from(rate)).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn same_rate_is_identity() {
        let mut r = LinearResampler::new(48_000, 48_000, 2);
        let input: Vec<i16> = (0..200).collect();
        let mut out = Vec::new();
        r.process(&input[..100], &mut out);
        r.process(&input[100..], &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn upsampling_by_two_interpolates_midpoints() {
        let mut r = LinearResampler::new(24_000, 48_000, 1);
        let mut out = Vec::new();
        r.process(&[0, 100, 200], &mut out);
        r.process(&[300], &mut out);
        assert_eq!(out, vec![0, 50, 100, 150, 200, 250, 300]);
    }

    #[test]
    fn downsampling_by_two_keeps_every_other_frame() {
        let mut r = LinearResampler::new(96_000, 48_000, 2);
        let input: Vec<i16> = (0..40).collect();
        let mut out = Vec::new();
        r.process(&input, &mut out);
        assert_eq!(
            out,
            vec![0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29, 32, 33, 36, 37]
        );
    }

    #[test]
    fn long_streams_keep_the_exact_ratio() {
        // 10 s of input in 20 ms periods -> 10 s of 48 kHz, less the few
        // frames that wait for the next input to interpolate against.
        for (from, chunk) in [
            (44_100u32, 882usize),
            (16_000, 320),
            (22_050, 441),
            (8_000, 160),
        ] {
            let mut r = LinearResampler::new(from, 48_000, 1);
            let mut total = 0usize;
            let mut per_chunk = Vec::new();
            for _ in 0..500 {
                let mut out = Vec::new();
                r.process(&vec![0i16; chunk], &mut out);
                per_chunk.push(out.len());
                total += out.len();
            }
            assert!((479_990..=480_000).contains(&total), "{from}: {total}");
            assert!(
                per_chunk.iter().skip(1).all(|&n| (959..=961).contains(&n)),
                "{from}"
            );
        }
    }

    #[test]
    fn a_resampled_sine_keeps_its_frequency_and_shape() {
        let input = sine(44_100, 440.0, 44_100);
        let mut r = LinearResampler::new(44_100, 48_000, 1);
        let mut out = Vec::new();
        for c in input.chunks(882) {
            r.process(c, &mut out);
        }
        let expect = sine(48_000, 440.0, out.len());
        let max_err = out
            .iter()
            .zip(&expect)
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        // Linear interpolation of a 440 Hz sine at 44.1 kHz: error < 0.2% FS.
        assert!(max_err < 60, "max error {max_err}");
    }

    #[test]
    fn reset_restarts_the_stream() {
        let mut r = LinearResampler::new(24_000, 48_000, 1);
        let mut out = Vec::new();
        r.process(&[0, 100], &mut out);
        r.reset();
        out.clear();
        r.process(&[1000, 1100], &mut out);
        assert_eq!(out, vec![1000, 1050, 1100]);
    }

    #[test]
    fn odd_input_is_harmless() {
        let mut r = LinearResampler::new(0, 48_000, 0);
        let mut out = Vec::new();
        r.process(&[], &mut out);
        r.process(&[1, 2, 3], &mut out);
        assert!(!out.is_empty());
        let mut r = LinearResampler::new(44_100, 48_000, 2);
        out.clear();
        r.process(&[7], &mut out); // half a frame
        assert!(out.is_empty());
    }

    #[test]
    fn channel_conversion() {
        assert_eq!(convert_channels(&[100, 300, -4, 2], 2, 1), vec![200, -1]);
        assert_eq!(
            convert_channels(&[i16::MAX, i16::MAX], 2, 1),
            vec![i16::MAX]
        );
        assert_eq!(convert_channels(&[5, -6], 1, 2), vec![5, 5, -6, -6]);
        assert_eq!(convert_channels(&[1, 2, 3], 1, 1), vec![1, 2, 3]);
        assert_eq!(convert_channels(&[1, 2, 3, 4, 5], 2, 1), vec![1, 3]);
    }
}
