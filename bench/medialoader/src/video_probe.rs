//! The glass-to-glass probe: how long a change in one leg's picture takes to show in the
//! composite the other legs receive.
//!
//! The speaker (the first leg) sends a VP8 clip whose picture turns bright at known frames (in
//! `bench/conference/run.sh`: `videotestsrc pattern=blink`, black and white half a second each).
//! Which frames those are is found once, by decoding the clip ([`onsets`]): a frame whose mean
//! luma crosses the threshold from below is an onset, and the first packet of it is where a
//! burst opens (its send instant is noted, [`VideoProbe::sent_onset`]). Every other leg decodes
//! the composite it receives ([`Watcher`]: `appsrc → rtpvp8depay → vp8dec → appsink` in
//! GStreamer) and, when the speaker's tile turns bright, times the arrival of that composite
//! frame against the burst's opening. The speaker's place in the grid is not assumed (the
//! room orders tiles by the order it answered the calls in, and under load the first leg's
//! INVITE was not always the first answered): each cell's central part (clear of the name
//! label) is measured and the brightest counts; the other legs' clip (a ball on black) keeps
//! theirs dark.
//!
//! What is timed: the first packet of the changed input frame leaving the speaker → the
//! changed composite frame arriving (its packets' arrival, not the receiver's decode): decode,
//! the compositor's wait, the encode and the two network hops (loopback) of the mixer, plus
//! the load client's own scheduling (so an upper bound).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::Clip;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The room's grid: columns × rows (`2x2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub cols: u32,
    pub rows: u32,
}

impl std::str::FromStr for Grid {
    type Err = String;

    fn from_str(s: &str) -> Result<Grid, String> {
        let parsed = s
            .split_once('x')
            .and_then(|(c, r)| Some((c.trim().parse().ok()?, r.trim().parse().ok()?)));
        match parsed {
            Some((cols, rows)) if (1..=8).contains(&cols) && (1..=8).contains(&rows) => {
                Ok(Grid { cols, rows })
            }
            _ => Err(format!("'{s}': want COLSxROWS, each 1..=8")),
        }
    }
}

impl Grid {
    /// Every cell, row by row.
    fn cells(self) -> impl Iterator<Item = Region> {
        let (w, h) = (1.0 / f64::from(self.cols), 1.0 / f64::from(self.rows));
        (0..self.rows).flat_map(move |r| {
            (0..self.cols).map(move |c| Region {
                x: f64::from(c) * w,
                y: f64::from(r) * h,
                w,
                h,
            })
        })
    }
}

/// A canvas region in fractions of its width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Region {
    /// The part measured: the middle half across, from a fifth to three fifths down (a tile's
    /// name label sits at its bottom left).
    fn centre(self) -> Region {
        Region {
            x: self.x + self.w * 0.25,
            y: self.y + self.h * 0.2,
            w: self.w * 0.5,
            h: self.h * 0.4,
        }
    }
}

/// Mean of the luma plane (8-bit, `stride` bytes a row) of a `width`×`height` picture over
/// `region`.
pub fn mean_luma(plane: &[u8], stride: usize, width: usize, height: usize, region: Region) -> f64 {
    let x0 = (region.x * width as f64) as usize;
    let y0 = (region.y * height as f64) as usize;
    let x1 = (((region.x + region.w) * width as f64) as usize).clamp(x0 + 1, width);
    let y1 = (((region.y + region.h) * height as f64) as usize).clamp(y0 + 1, height);
    let mut sum = 0u64;
    let mut n = 0u64;
    for row in y0..y1 {
        if let Some(line) = plane.get(row * stride + x0..row * stride + x1) {
            sum += line.iter().map(|&b| u64::from(b)).sum::<u64>();
            n += line.len() as u64;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

/// A decoder of VP8 RTP: packets in with their arrival instants, each decoded picture's
/// brightest cell of `grid` out (mean luma of its centre, with the arrival instant its packets
/// carried).
struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    epoch: Instant,
}

impl Decoder {
    fn new(
        pt: u8,
        grid: Grid,
        mut on_picture: impl FnMut(Instant, f64) + Send + 'static,
    ) -> anyhow::Result<Decoder> {
        let epoch = Instant::now();
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=in format=time is-live=false \
             caps=application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload={pt} \
             ! rtpvp8depay ! vp8dec max-errors=-1 ! appsink name=out sync=false"
        ))
        .context("a VP8 decoding pipeline (gstreamer1.0-plugins-good installed?)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
        let src: gst_app::AppSrc = element(&pipeline, "in")?;
        // Unbounded: the leg's task must never block on the decoder.
        src.set_max_bytes(0);
        let sink: gst_app::AppSink = element(&pipeline, "out")?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    // A sample without a readable, timed raw picture is skipped.
                    if let Some((pts, mean)) = brightest_cell(&sample, grid) {
                        on_picture(epoch + Duration::from_nanos(pts.nseconds()), mean);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing)?;
        Ok(Decoder {
            pipeline,
            src,
            epoch,
        })
    }

    /// One RTP packet that arrived at `at`.
    fn push(&self, packet: Vec<u8>, at: Instant) {
        let mut buffer = gst::Buffer::from_mut_slice(packet);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(
                at.saturating_duration_since(self.epoch).as_nanos() as u64,
            ));
        }
        let _ = self.src.push_buffer(buffer);
    }

    /// Ends the stream and waits (bounded) for the pictures still in the pipeline.
    fn finish(self) {
        let _ = self.src.end_of_stream();
        if let Some(bus) = self.pipeline.bus() {
            let _ = bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(5),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The element `name` of `pipeline`, as the type `T` it must be.
fn element<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> anyhow::Result<T> {
    pipeline
        .by_name(name)
        .and_then(|e| e.downcast::<T>().ok())
        .with_context(|| format!("no {} named '{name}'", std::any::type_name::<T>()))
}

/// A decoded picture's timestamp and the mean luma of its brightest `grid` cell (centres
/// only); `None` when the sample has no buffer, caps, raw video info, timestamp or mapping.
fn brightest_cell(sample: &gst::Sample, grid: Grid) -> Option<(gst::ClockTime, f64)> {
    let buffer = sample.buffer()?;
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let pts = buffer.pts()?;
    let map = buffer.map_readable().ok()?;
    let plane = &map[info.offset()[0]..];
    let mean = grid
        .cells()
        .map(|cell| {
            mean_luma(
                plane,
                info.stride()[0] as usize,
                info.width() as usize,
                info.height() as usize,
                cell.centre(),
            )
        })
        .fold(0.0, f64::max);
    Some((pts, mean))
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Serialises an RTP packet (no CSRCs, no extensions: the decoder needs neither).
pub fn rtp_bytes(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push((u8::from(marker) << 7) | (pt & 0x7f));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Which packets of `clip` (VP8, payload type 96 or any) open a picture that is bright
/// (mean luma of the whole picture above `threshold`) after one that is not; the clip loops,
/// so its first picture follows its last.
pub fn onsets(clip: &Clip, threshold: f64) -> anyhow::Result<Vec<bool>> {
    let whole = Grid { cols: 1, rows: 1 };
    let pictures: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::default();
    let decoder = {
        let pictures = pictures.clone();
        Decoder::new(96, whole, move |at, mean| lock(&pictures).push((at, mean)))?
    };
    // Each frame's packets carry the frame's own instant (its RTP time), so a picture maps
    // back to its frame.
    let epoch = decoder.epoch;
    let at = |ts: u32| epoch + Duration::from_micros(u64::from(ts) * 1_000_000 / 90_000);
    for (i, p) in clip.packets.iter().enumerate() {
        decoder.push(
            rtp_bytes(96, p.marker, i as u16, p.ts, 1, &p.payload),
            at(p.ts),
        );
    }
    decoder.finish();
    let pictures = lock(&pictures).clone();
    let bright: Vec<(Instant, bool)> = pictures
        .iter()
        .map(|(t, mean)| (*t, *mean > threshold))
        .collect();
    let Some(&(_, last_bright)) = bright.last() else {
        anyhow::bail!("the video probe clip decoded to no picture");
    };
    let mut onset_times = Vec::new();
    let mut before = last_bright;
    for &(t, b) in &bright {
        if b && !before {
            onset_times.push(t);
        }
        before = b;
    }
    if onset_times.is_empty() {
        anyhow::bail!("the video probe clip never turns bright (mean luma > {threshold})");
    }
    // The first packet of each onset frame.
    let mut out = vec![false; clip.packets.len()];
    let mut previous_ts = None;
    for (i, p) in clip.packets.iter().enumerate() {
        if previous_ts != Some(p.ts) && onset_times.contains(&at(p.ts)) {
            out[i] = true;
        }
        previous_ts = Some(p.ts);
    }
    Ok(out)
}

/// The probe's shared state: the speaker opens bursts, the watchers time them.
#[derive(Debug)]
pub struct VideoProbe {
    /// What the speaker sends instead of the other legs' clip.
    pub clip: Arc<Clip>,
    /// Per packet of `clip`: whether it opens a bright picture.
    pub onset: Vec<bool>,
    pub grid: Grid,
    pub threshold: f64,
    /// The current burst's number (from 1) and when its first packet went out.
    current: Mutex<(u64, Option<Instant>)>,
    /// Every watcher's delay for every burst it saw.
    delays: Mutex<Vec<Duration>>,
    /// Pictures of the composite the watchers decoded, and the brightest tile (mean luma) and
    /// the darkest they saw: what to look at when no delay is timed.
    pub pictures: AtomicU64,
    luma_range: Mutex<(f64, f64)>,
}

impl VideoProbe {
    /// The probe of `clip` (its onsets found by decoding it), watched in a composite laid out
    /// as `grid`.
    pub fn load(clip: Clip, grid: Grid, threshold: f64) -> anyhow::Result<VideoProbe> {
        let onset = onsets(&clip, threshold)?;
        Ok(VideoProbe::new(Arc::new(clip), onset, grid, threshold))
    }

    fn new(clip: Arc<Clip>, onset: Vec<bool>, grid: Grid, threshold: f64) -> VideoProbe {
        VideoProbe {
            clip,
            onset,
            grid,
            threshold,
            current: Mutex::new((0, None)),
            delays: Mutex::new(Vec::new()),
            pictures: AtomicU64::new(0),
            luma_range: Mutex::new((f64::INFINITY, f64::NEG_INFINITY)),
        }
    }

    /// The darkest and the brightest tile the watchers saw (mean luma).
    pub fn luma_range(&self) -> (f64, f64) {
        *lock(&self.luma_range)
    }

    /// The speaker sent the first packet of an onset frame at `now`.
    pub fn sent_onset(&self, now: Instant) {
        let mut current = lock(&self.current);
        *current = (current.0 + 1, Some(now));
    }

    /// A watcher's tile turned bright in a frame that arrived at `at`; `seen` is the last
    /// burst it timed.
    fn saw_onset(&self, at: Instant, seen: &mut u64) {
        let (number, started) = *lock(&self.current);
        if let Some(start) = started.filter(|_| number > *seen) {
            *seen = number;
            lock(&self.delays).push(at.saturating_duration_since(start));
        }
    }

    /// Every delay timed, sorted.
    pub fn delays(&self) -> Vec<Duration> {
        let mut d = lock(&self.delays).clone();
        d.sort();
        d
    }
}

/// One watching leg's decoder of the composite.
pub struct Watcher {
    decoder: Decoder,
}

impl Watcher {
    /// Decodes the composite (VP8 on `pt`) and reports the speaker's tile turning bright to
    /// `probe`.
    pub fn new(probe: Arc<VideoProbe>, pt: u8) -> anyhow::Result<Watcher> {
        let mut bright = true;
        let mut seen = 0u64;
        let watched = probe.clone();
        let decoder = Decoder::new(pt, probe.grid, move |at, mean| {
            watched.pictures.fetch_add(1, Ordering::Relaxed);
            {
                let mut range = lock(&watched.luma_range);
                *range = (range.0.min(mean), range.1.max(mean));
            }
            let now_bright = mean > watched.threshold;
            if now_bright && !bright {
                watched.saw_onset(at, &mut seen);
            }
            bright = now_bright;
        })?;
        Ok(Watcher { decoder })
    }

    /// A composite packet that arrived at `at`.
    pub fn push(&self, packet: Vec<u8>, at: Instant) {
        self.decoder.push(packet, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_parses_and_names_its_cells_row_by_row() {
        let g: Grid = "3x2".parse().unwrap();
        assert_eq!(g, Grid { cols: 3, rows: 2 });
        let cells: Vec<Region> = g.cells().collect();
        assert_eq!(cells.len(), 6);
        assert_eq!((cells[1].x, cells[1].y), (1.0 / 3.0, 0.0));
        assert_eq!((cells[3].x, cells[3].y, cells[3].h), (0.0, 0.5, 0.5));
        for bad in ["3", "0x2", "9x1", "ax2", "2x"] {
            assert!(bad.parse::<Grid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_mean_luma_covers_the_region_only() {
        // 8x4 picture, stride 10: left half 200, right half 20.
        let mut plane = vec![0u8; 40];
        for row in 0..4 {
            for col in 0..8 {
                plane[row * 10 + col] = if col < 4 { 200 } else { 20 };
            }
        }
        let left = Region {
            x: 0.0,
            y: 0.0,
            w: 0.5,
            h: 1.0,
        };
        assert_eq!(mean_luma(&plane, 10, 8, 4, left), 200.0);
        let whole = Region { w: 1.0, ..left };
        assert_eq!(mean_luma(&plane, 10, 8, 4, whole), 110.0);
    }

    #[test]
    fn a_burst_is_timed_once_per_watcher() {
        let clip = Arc::new(Clip {
            packets: Vec::new(),
            clock: 90_000,
            length: 0,
        });
        let probe = VideoProbe::new(clip, Vec::new(), Grid { cols: 1, rows: 1 }, 128.0);
        let t0 = Instant::now();
        let mut seen = 0;
        // Before any burst opened: nothing to time.
        probe.saw_onset(t0, &mut seen);
        probe.sent_onset(t0);
        probe.saw_onset(t0 + Duration::from_millis(80), &mut seen);
        probe.saw_onset(t0 + Duration::from_millis(120), &mut seen);
        assert_eq!(probe.delays(), [Duration::from_millis(80)]);
    }
}
