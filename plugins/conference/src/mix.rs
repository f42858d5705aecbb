//! Audio mixing in our code: one 20 ms frame of 48 kHz mono per participant in, one N−1 mix per
//! participant out, computed as total − own (O(N), where N GStreamer mixers cost O(N²)), and
//! the active speaker from the frames' energy. Pure functions and a small state machine,
//! unit-tested; the media thread (`media.rs`) feeds it decoded PCM and encodes what it returns.

/// Samples per frame: 20 ms at 48 kHz.
pub const FRAME: usize = 960;

/// Level in dBov below which a participant is treated as silent (RFC 6464's -127..0 scale).
const SILENCE_DBOV: f32 = -50.0;

/// Mixes one frame: `inputs[i]` is participant i's frame (`None`: nothing this tick), `out[i]`
/// becomes everyone's sum except i's own, clipped to 16 bits.
pub fn mix_minus(inputs: &[Option<&[i16]>], out: &mut Vec<Vec<i16>>) {
    let mut total = [0i32; FRAME];
    for frame in inputs.iter().flatten() {
        for (t, s) in total.iter_mut().zip(frame.iter()) {
            *t += i32::from(*s);
        }
    }
    out.resize_with(inputs.len(), Vec::new);
    for (own, o) in inputs.iter().zip(out.iter_mut()) {
        o.clear();
        o.extend(total.iter().enumerate().map(|(k, t)| {
            let mine = own.and_then(|f| f.get(k)).map_or(0, |s| i32::from(*s));
            // Clipping, not wrapping: a loud room distorts rather than screeches.
            (t - mine).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
        }));
    }
}

/// A frame's level in dBov (0 = full scale, -127 = digital silence), as RFC 6464 measures it.
pub fn level_dbov(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -127.0;
    }
    let energy: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame.len() as f64;
    let rms = energy.sqrt() / 32768.0;
    if rms <= 0.0 {
        return -127.0;
    }
    (20.0 * rms.log10()).clamp(-127.0, 0.0) as f32
}

/// Picks the active speaker: the loudest smoothed level above silence, switching only when
/// another participant has been louder for `hold` consecutive frames (no flapping on a cough).
#[derive(Debug, Clone)]
pub struct SpeakerDetector {
    smoothed: Vec<f32>,
    current: Option<usize>,
    challenger: Option<(usize, u32)>,
    hold: u32,
}

impl SpeakerDetector {
    /// A detector that switches after `hold` frames (e.g. 15 = 300 ms).
    pub fn new(hold: u32) -> SpeakerDetector {
        SpeakerDetector {
            smoothed: Vec::new(),
            current: None,
            challenger: None,
            hold: hold.max(1),
        }
    }

    /// Feeds one frame's levels (index = participant); returns the speaker after it.
    pub fn update(&mut self, levels: &[f32]) -> Option<usize> {
        self.smoothed.resize(levels.len(), -127.0);
        for (s, l) in self.smoothed.iter_mut().zip(levels) {
            // Fast attack, slow decay: speech onsets count at once, pauses between words do not.
            *s = if *l > *s { *l } else { *s * 0.9 + *l * 0.1 };
        }
        if self.current.is_some_and(|c| c >= levels.len()) {
            self.current = None;
        }
        let loudest = self
            .smoothed
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > SILENCE_DBOV)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        match (self.current, loudest) {
            (_, None) => self.challenger = None,
            (None, Some(l)) => self.current = Some(l),
            (Some(c), Some(l)) if c == l => self.challenger = None,
            (Some(_), Some(l)) => {
                let count = match self.challenger {
                    Some((who, n)) if who == l => n + 1,
                    _ => 1,
                };
                if count >= self.hold {
                    self.current = Some(l);
                    self.challenger = None;
                } else {
                    self.challenger = Some((l, count));
                }
            }
        }
        self.current
    }

    /// Forgets participant `i` (the others shift down by one, as in the input order).
    pub fn remove(&mut self, i: usize) {
        if i < self.smoothed.len() {
            self.smoothed.remove(i);
        }
        self.current = match self.current {
            Some(c) if c == i => None,
            Some(c) if c > i => Some(c - 1),
            other => other,
        };
        self.challenger = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(v: i16) -> Vec<i16> {
        vec![v; FRAME]
    }

    #[test]
    fn nobody_hears_themselves() {
        let (a, b, c) = (tone(100), tone(20), tone(3));
        let mut out = Vec::new();
        mix_minus(&[Some(&a), Some(&b), Some(&c)], &mut out);
        assert_eq!(out.len(), 3);
        assert!(out[0].iter().all(|s| *s == 23));
        assert!(out[1].iter().all(|s| *s == 103));
        assert!(out[2].iter().all(|s| *s == 120));
    }

    #[test]
    fn a_missing_frame_counts_as_silence_and_loud_sums_clip() {
        let a = tone(30000);
        let b = tone(30000);
        let mut out = Vec::new();
        mix_minus(&[Some(&a), Some(&b), None], &mut out);
        assert!(
            out[2].iter().all(|s| *s == i16::MAX),
            "clipped, not wrapped"
        );
        assert!(out[0].iter().all(|s| *s == 30000));
        let short = vec![5i16; 10];
        mix_minus(&[Some(&short), Some(&b)], &mut out);
        assert_eq!(out[1][0], 5);
        assert_eq!(out[1][FRAME - 1], 0);
    }

    #[test]
    fn levels_in_dbov() {
        assert_eq!(level_dbov(&tone(0)), -127.0);
        assert!((level_dbov(&tone(i16::MAX)) - 0.0).abs() < 0.01);
        let l = level_dbov(&tone(3277));
        assert!((l + 20.0).abs() < 0.1, "{l}");
    }

    #[test]
    fn the_speaker_switches_only_after_the_hold() {
        let mut d = SpeakerDetector::new(3);
        assert_eq!(d.update(&[-127.0, -127.0]), None, "silence: nobody");
        assert_eq!(d.update(&[-20.0, -127.0]), Some(0));
        // 1 gets louder: not yet…
        assert_eq!(d.update(&[-127.0, -10.0]), Some(0));
        assert_eq!(d.update(&[-127.0, -10.0]), Some(0));
        // …now.
        assert_eq!(d.update(&[-127.0, -10.0]), Some(1));
        d.remove(0);
        assert_eq!(d.update(&[-10.0]), Some(0), "indices shift on leave");
    }
}
