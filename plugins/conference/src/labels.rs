//! Name labels, drawn on the canvas at each tile's displayed size.
//!
//! A label used to be a `textoverlay` in every tile's branch, blending its text onto each
//! decoded frame (640x360 at 30 fps per participant) before the compositor scaled the frame
//! down; at 16 tiles that was ~0.017 core of blending at a size nobody sees. Now each name is
//! rendered once per font size (by GStreamer's `textrender`, the same Pango text and outline
//! `textoverlay` draws), kept as an overlay rectangle, and the room's composition of
//! rectangles (one per visible tile, placed by `layout::label_place`) is blended onto the
//! composite: per frame only the labels' pixels at the size shown, and the composition is
//! rebuilt only when the layout or the names change (`media.rs`, `Shared::relayout`).
//!
//! Rendering blocks (the first time for as long as Pango and fontconfig take to load), so it
//! happens on a thread of its own per room (`media.rs`, `label_loop`): a relayout draws the
//! names it has ([`LabelCache`]) and asks for the others, which show a frame or two later.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// Longest name drawn, in characters; a longer one is cut and ends in "…".
const MAX_CHARS: usize = 24;
/// The box every label is rendered into, then cropped to its text: wide enough for
/// [`MAX_CHARS`] at the largest font (`layout::label_px`, 48 px), tall enough for its line.
const BOX_W: u32 = 1280;
const BOX_H: u32 = 128;
/// Names kept rendered per room (name and size), beyond which the cache starts again.
const MAX_CACHED: usize = 256;
/// How long a label may take to render before it is given up (a stuck renderer must not
/// stall a relayout).
const RENDER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a label shows for a participant's display name: one line of at most [`MAX_CHARS`]
/// characters, control characters (a line break in a SIP display name) as spaces.
pub fn label_text(display: &str) -> String {
    let clean: String = display
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() <= MAX_CHARS {
        return clean.to_owned();
    }
    let mut cut: String = clean.chars().take(MAX_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// The smallest box holding every pixel of a packed AYUV image (`stride` bytes a row) whose
/// alpha is not zero: `(x, y, w, h)`, or `None` when all of it is transparent.
pub fn opaque_box(
    data: &[u8],
    stride: usize,
    width: u32,
    height: u32,
) -> Option<(u32, u32, u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..height {
        let Some(row) = data.get(y as usize * stride..y as usize * stride + width as usize * 4)
        else {
            break;
        };
        for (x, px) in (0u32..).zip(row.chunks_exact(4)) {
            if px[0] != 0 {
                x0 = x0.min(x);
                x1 = x1.max(x + 1);
                y0 = y0.min(y);
                y1 = y1.max(y + 1);
            }
        }
    }
    (x1 > x0 && y1 > y0).then(|| (x0, y0, x1 - x0, y1 - y0))
}

/// A rendered label: packed AYUV pixels (not premultiplied), cropped to the text and its
/// outline.
#[derive(Debug, Clone)]
pub struct Label {
    /// `width` × `height` pixels, 4 bytes each: alpha, Y, U, V.
    pub pixels: Arc<Vec<u8>>,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
}

impl Label {
    /// The label placed at `(x, y)` (even), `w`×`h` on the canvas (scaled, nearest pixel, when
    /// that is not its own size), split into I420's planes for [`stamp_i420`].
    pub fn at(&self, x: u32, y: u32, w: u32, h: u32) -> Stamp {
        let (sw, sh) = (self.width as usize, self.height as usize);
        let (w, h) = ((w as usize) & !1, (h as usize) & !1);
        let mut luma = vec![0u8; w * h];
        let mut alpha = vec![0u8; w * h];
        let mut src = vec![[0u8; 4]; w * h];
        for row in 0..h {
            let sy = row * sh / h.max(1);
            for col in 0..w {
                let sx = col * sw / w.max(1);
                let at = (sy * sw + sx) * 4;
                if let Some(px) = self.pixels.get(at..at + 4) {
                    src[row * w + col] = [px[0], px[1], px[2], px[3]];
                    alpha[row * w + col] = px[0];
                    luma[row * w + col] = px[1];
                }
            }
        }
        // Chroma per 2x2 block: its mean alpha, and the colour weighted by each pixel's alpha.
        let (cw, ch) = (w / 2, h / 2);
        let mut u = vec![128u8; cw * ch];
        let mut v = vec![128u8; cw * ch];
        let mut calpha = vec![0u8; cw * ch];
        for row in 0..ch {
            for col in 0..cw {
                let block = [
                    src[2 * row * w + 2 * col],
                    src[2 * row * w + 2 * col + 1],
                    src[(2 * row + 1) * w + 2 * col],
                    src[(2 * row + 1) * w + 2 * col + 1],
                ];
                let total: u32 = block.iter().map(|p| u32::from(p[0])).sum();
                let i = row * cw + col;
                calpha[i] = (total / 4) as u8;
                if total > 0 {
                    let weighted = |c: usize| {
                        (block
                            .iter()
                            .map(|p| u32::from(p[0]) * u32::from(p[c]))
                            .sum::<u32>()
                            / total) as u8
                    };
                    u[i] = weighted(2);
                    v[i] = weighted(3);
                }
            }
        }
        Stamp {
            x: x as usize & !1,
            y: y as usize & !1,
            w,
            h,
            planes: [(luma, alpha), (u, calpha.clone()), (v, calpha)],
        }
    }
}

/// A label as blended onto each composite frame: its place and, per I420 plane (Y, U, V at
/// half size), its samples and their alpha.
#[derive(Debug, Clone)]
pub struct Stamp {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    planes: [(Vec<u8>, Vec<u8>); 3],
}

impl Stamp {
    /// Blends this label's `plane` into `data` (`stride` bytes a row, `pw`×`ph` samples),
    /// clipped to it: only the label's own samples are read and written.
    fn blend(&self, plane: usize, data: &mut [u8], stride: usize, pw: usize, ph: usize) {
        let shift = usize::from(plane > 0);
        let (x, y, w, h) = (
            self.x >> shift,
            self.y >> shift,
            self.w >> shift,
            self.h >> shift,
        );
        let (samples, alpha) = &self.planes[plane];
        let cols = w.min(pw.saturating_sub(x));
        for row in 0..h.min(ph.saturating_sub(y)) {
            let Some(dst) = data.get_mut((y + row) * stride + x..(y + row) * stride + x + cols)
            else {
                return;
            };
            let src = samples.get(row * w..row * w + cols).unwrap_or(&[]);
            let a = alpha.get(row * w..row * w + cols).unwrap_or(&[]);
            for ((d, &s), &a) in dst.iter_mut().zip(src).zip(a) {
                if a != 0 {
                    let a = u32::from(a);
                    *d = ((a * u32::from(s) + (255 - a) * u32::from(*d) + 127) / 255) as u8;
                }
            }
        }
    }
}

/// Blends `stamps` onto an I420 frame (anything else is left alone). Per frame this touches
/// the labels' samples only: `gst_video_blend` (what an overlay composition or `textoverlay`
/// blends with) unpacks and packs every whole line a label crosses, which on a 1280-wide
/// canvas cost more than the labels had on the tiles' 640-wide frames.
pub fn stamp_i420(frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>, stamps: &[Stamp]) {
    if frame.format() != gst_video::VideoFormat::I420 || stamps.is_empty() {
        return;
    }
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let strides: Vec<usize> = frame
        .plane_stride()
        .iter()
        .map(|&s| usize::try_from(s).unwrap_or(0))
        .collect();
    for (plane, &stride) in strides.iter().enumerate().take(3) {
        let (pw, ph) = if plane == 0 {
            (w, h)
        } else {
            (w.div_ceil(2), h.div_ceil(2))
        };
        let Ok(data) = frame.plane_data_mut(plane as u32) else {
            continue;
        };
        for s in stamps {
            s.blend(plane, data, stride, pw, ph);
        }
    }
}

/// What a room knows of its names' renderings: those done (`None`: nothing to draw, an empty
/// name or a failed render) and those asked of the renderer's thread and not back yet.
#[derive(Debug, Default)]
pub struct LabelCache {
    rendered: HashMap<(String, u32), Option<Label>>,
    pending: HashSet<(String, u32)>,
}

/// A cache lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Rendered (or known to be nothing to draw).
    Ready(Option<Label>),
    /// Not yet: the caller is to ask the renderer for it (`true`), or it asked already.
    Missing(bool),
}

impl LabelCache {
    /// `text` at `px` pixels if rendered; otherwise notes it as asked for, once.
    pub fn lookup(&mut self, text: &str, px: u32) -> Lookup {
        let key = (text.to_owned(), px);
        if let Some(label) = self.rendered.get(&key) {
            return Lookup::Ready(label.clone());
        }
        if text.is_empty() {
            return Lookup::Ready(None);
        }
        Lookup::Missing(self.pending.insert(key))
    }

    /// A rendering came back.
    pub fn put(&mut self, text: String, px: u32, label: Option<Label>) {
        let key = (text, px);
        self.pending.remove(&key);
        if self.rendered.len() >= MAX_CACHED {
            self.rendered.clear();
        }
        self.rendered.insert(key, label);
    }

    /// Forgets the renderings of names no longer in the room.
    pub fn keep_only(&mut self, texts: &[&str]) {
        self.rendered
            .retain(|(t, _), _| texts.contains(&t.as_str()));
    }
}

/// Renders names with `textrender` (`appsrc ! textrender ! appsink`, built once and kept: a
/// label costs one text buffer through it). It blocks, the first time for as long as Pango
/// and fontconfig take to load (seconds on a cold, busy machine): it runs on a room's label
/// thread, never on the plugin's or the mixer's.
pub struct Renderer {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    render: gst::Element,
    sink: gst_app::AppSink,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Renderer {
    /// Builds and starts the renderer; `Err` says what is missing.
    pub fn new() -> Result<Renderer, String> {
        let make = |factory: &str| {
            gst::ElementFactory::make(factory)
                .build()
                .map_err(|_| format!("GStreamer element '{factory}' is not installed"))
        };
        let pipeline = gst::Pipeline::with_name("labels");
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("text/x-raw")
                    .field("format", "utf8")
                    .build(),
            )
            .format(gst::Format::Time)
            .build();
        let render = make("textrender")?;
        render.set_property_from_str("halignment", "left");
        render.set_property_from_str("valignment", "top");
        render.set_property_from_str("line-alignment", "left");
        // A little room for the outline, cropped off again with the rest of the box.
        render.set_property("xpad", 2i32);
        render.set_property("ypad", 2i32);
        let sink = gst_app::AppSink::builder()
            .caps(
                &gst::Caps::builder("video/x-raw")
                    .field("format", "AYUV")
                    .field("width", BOX_W as i32)
                    .field("height", BOX_H as i32)
                    .build(),
            )
            .sync(false)
            .build();
        pipeline
            .add_many([src.upcast_ref(), &render, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &render, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;
        // Nobody reads its messages (a failed render is a missing label): none pile up.
        if let Some(bus) = pipeline.bus() {
            bus.set_flushing(true);
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("label renderer: {e}"))?;
        Ok(Renderer {
            pipeline,
            src,
            render,
            sink,
        })
    }

    /// One label (`text` already [`label_text`]): the text through `textrender` into the box,
    /// cropped to its opaque pixels; `None` when nothing came back in time.
    pub fn render(&self, text: &str, px: u32) -> Option<Label> {
        // A picture a timed-out render left behind is not this text's.
        while self.sink.try_pull_sample(gst::ClockTime::ZERO).is_some() {}
        self.render
            .set_property("font-desc", format!("Sans {px}px"));
        self.src
            .push_buffer(gst::Buffer::from_slice(text.as_bytes().to_vec()))
            .ok()?;
        let sample = self
            .sink
            .try_pull_sample(gst::ClockTime::try_from(RENDER_TIMEOUT).ok()?)?;
        let info = gst_video::VideoInfo::from_caps(sample.caps()?).ok()?;
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
        let stride = usize::try_from(frame.plane_stride()[0]).ok()?;
        let data = frame.plane_data(0).ok()?;
        let (x, y, w, h) = opaque_box(data, stride, info.width(), info.height())?;
        let mut out = Vec::with_capacity((w * h * 4) as usize);
        for row in y..y + h {
            let start = row as usize * stride + x as usize * 4;
            out.extend_from_slice(data.get(start..start + w as usize * 4)?);
        }
        Some(Label {
            pixels: Arc::new(out),
            width: w,
            height: h,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_one_short_line() {
        assert_eq!(label_text("  Alice  "), "Alice");
        assert_eq!(label_text("Bob\r\nEvil: header"), "Bob  Evil: header");
        let long = label_text("Bartholomew Fitzgerald-Montgomery the Third");
        assert_eq!(long.chars().count(), MAX_CHARS);
        assert!(long.ends_with('…'), "{long}");
        assert_eq!(label_text("\u{7}"), "");
        // Markup is text: textrender is fed utf8, not pango-markup.
        assert_eq!(label_text("<b>x</b>"), "<b>x</b>");
    }

    #[test]
    fn the_opaque_box_crops_transparent_edges() {
        // 4x3 AYUV, stride 20 (padding), one opaque pixel at (1, 1) and one at (2, 2).
        let mut data = vec![0u8; 20 * 3];
        data[20 + 4] = 255;
        data[2 * 20 + 8] = 10;
        assert_eq!(opaque_box(&data, 20, 4, 3), Some((1, 1, 2, 2)));
        assert_eq!(opaque_box(&[0u8; 48], 16, 4, 3), None);
        // A short buffer is read as far as it holds whole rows.
        assert_eq!(opaque_box(&data[..40], 20, 4, 3), Some((1, 1, 1, 1)));
    }

    #[test]
    fn names_render_to_white_text_cropped_to_their_size() {
        gst::init().unwrap();
        let renderer = Renderer::new().unwrap();
        let small = renderer.render("Alice", 12).expect("rendered");
        let big = renderer.render("Alice", 36).expect("rendered");
        assert!(big.width > small.width * 2 && big.height > small.height * 2);
        assert!(small.height >= 10 && small.height < 30, "{small:?}");
        let longer = renderer.render("Alice Example", 12).expect("rendered");
        assert!(longer.width > small.width);
        // The text is light (luma), its outline dark.
        let lumas: Vec<u8> = big
            .pixels
            .chunks_exact(4)
            .filter(|p| p[0] > 200)
            .map(|p| p[1])
            .collect();
        assert!(lumas.iter().any(|&y| y > 200) && lumas.iter().any(|&y| y < 60));
    }

    #[test]
    fn the_cache_asks_for_each_rendering_once_and_forgets_names_that_left() {
        gst::init().unwrap();
        let mut cache = LabelCache::default();
        assert!(matches!(cache.lookup("Alice", 12), Lookup::Missing(true)));
        assert!(matches!(cache.lookup("Alice", 12), Lookup::Missing(false)));
        assert!(matches!(cache.lookup("Alice", 24), Lookup::Missing(true)));
        assert!(matches!(cache.lookup("", 12), Lookup::Ready(None)));
        let pixels = Arc::new(vec![0u8; 4]);
        cache.put(
            "Alice".into(),
            12,
            Some(Label {
                pixels,
                width: 1,
                height: 1,
            }),
        );
        assert!(matches!(cache.lookup("Alice", 12), Lookup::Ready(Some(_))));
        // A failed rendering is not asked for again.
        cache.put("Alice".into(), 24, None);
        assert!(matches!(cache.lookup("Alice", 24), Lookup::Ready(None)));
        cache.put("Bob".into(), 12, None);
        cache.keep_only(&["Bob"]);
        assert!(matches!(cache.lookup("Alice", 12), Lookup::Missing(true)));
        assert!(matches!(cache.lookup("Bob", 12), Lookup::Ready(None)));
    }

    #[test]
    fn a_stamp_blends_only_its_own_samples_and_is_clipped_to_the_frame() {
        gst::init().unwrap();
        // A 4x2 label: opaque white on the left half, transparent on the right.
        let mut pixels = Vec::new();
        for _row in 0..2 {
            for col in 0..4 {
                pixels.extend_from_slice(if col < 2 {
                    &[255, 235, 128, 128]
                } else {
                    &[0, 0, 0, 0]
                });
            }
        }
        let label = Label {
            pixels: Arc::new(pixels),
            width: 4,
            height: 2,
        };
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 8, 4)
            .build()
            .unwrap();
        let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
        buffer.get_mut().unwrap().map_writable().unwrap().fill(16);
        {
            let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(
                buffer.get_mut().unwrap(),
                &info,
            )
            .unwrap();
            // At (2, 2), and a second one hanging off the bottom-right corner.
            stamp_i420(&mut frame, &[label.at(2, 2, 4, 2), label.at(6, 2, 4, 2)]);
            let stride = frame.plane_stride()[0] as usize;
            let y = frame.plane_data(0).unwrap();
            let row = |r: usize| y[r * stride..r * stride + 8].to_vec();
            assert_eq!(row(0), [16; 8]);
            assert_eq!(row(1), [16; 8]);
            assert_eq!(row(2), [16, 16, 235, 235, 16, 16, 235, 235]);
            assert_eq!(row(3), [16, 16, 235, 235, 16, 16, 235, 235]);
            // Chroma: the opaque 2x2 block's colour, the rest untouched.
            let cstride = frame.plane_stride()[1] as usize;
            let u = frame.plane_data(1).unwrap();
            assert_eq!(&u[cstride..cstride + 4], [16, 128, 16, 128]);
            assert_eq!(&u[..4], [16; 4]);
        }
        // Scaled: twice the size, every sample of the left half opaque.
        let big = label.at(0, 0, 8, 4);
        assert_eq!(big.planes[0].1.iter().filter(|&&a| a == 255).count(), 16);
    }

    /// What a second of names costs at 30 fps (printed, not asserted): 16 names on their 640x360
    /// frames as `textoverlay` blended them (`gst_video_blend` through an overlay composition),
    /// the same 16 at the tiles' size on the 1280x720 canvas blended the same way, and with
    /// [`stamp_i420`]. `cargo test -p huddle-plugin-conference --release -- --ignored
    /// --nocapture what_names_cost`.
    #[test]
    #[ignore = "a measurement, not a test"]
    fn what_names_cost() {
        gst::init().unwrap();
        let renderer = Renderer::new().unwrap();
        let frame_of = |w: u32, h: u32| {
            let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, w, h)
                .build()
                .unwrap();
            let buffer = gst::Buffer::with_size(info.size()).unwrap();
            (info, buffer)
        };
        let rect_of = |label: &Label, x: u32, y: u32| {
            let mut pixels = gst::Buffer::from_slice(label.pixels.to_vec());
            gst_video::VideoMeta::add(
                pixels.get_mut().unwrap(),
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::Ayuv,
                label.width,
                label.height,
            )
            .unwrap();
            gst_video::VideoOverlayRectangle::new_raw(
                &pixels,
                x as i32,
                y as i32,
                label.width,
                label.height,
                gst_video::VideoOverlayFormatFlags::empty(),
            )
        };
        let frames = 30;
        for n in [4u32, 16] {
            let cols = if n == 4 { 2 } else { 4 };
            let (tw, th) = (1280 / cols, 720 / cols);
            let px = (th / 15).clamp(10, 48);
            // Before: each tile's frame, 640x360, its label at 24 px.
            let tile_label = renderer.render("Guest 12", 24).unwrap();
            let (info, mut buffer) = frame_of(640, 360);
            let tile =
                gst_video::VideoOverlayComposition::new([&rect_of(&tile_label, 24, 300)]).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..frames * n {
                let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(
                    buffer.get_mut().unwrap(),
                    &info,
                )
                .unwrap();
                tile.blend(&mut f).unwrap();
            }
            let before = t.elapsed();
            // On the canvas, one label per tile at its size.
            let label = renderer.render("Guest 12", px).unwrap();
            let places: Vec<(u32, u32)> = (0..n)
                .map(|i| {
                    (
                        (i % cols) * tw + px,
                        (i / cols) * th + th - px - label.height,
                    )
                })
                .collect();
            let (info, mut buffer) = frame_of(1280, 720);
            let rects: Vec<_> = places.iter().map(|&(x, y)| rect_of(&label, x, y)).collect();
            let composition = gst_video::VideoOverlayComposition::new(rects.iter()).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..frames {
                let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(
                    buffer.get_mut().unwrap(),
                    &info,
                )
                .unwrap();
                composition.blend(&mut f).unwrap();
            }
            let canvas_gst = t.elapsed();
            let stamps: Vec<Stamp> = places
                .iter()
                .map(|&(x, y)| label.at(x, y, label.width, label.height))
                .collect();
            let t = std::time::Instant::now();
            for _ in 0..frames {
                let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(
                    buffer.get_mut().unwrap(),
                    &info,
                )
                .unwrap();
                stamp_i420(&mut f, &stamps);
            }
            let canvas_stamp = t.elapsed();
            println!(
                "N={n}: one second of names: on each tile's frame {:.2} ms, on the canvas with \
                 gst_video_blend {:.2} ms, with stamp_i420 {:.2} ms",
                before.as_secs_f64() * 1e3,
                canvas_gst.as_secs_f64() * 1e3,
                canvas_stamp.as_secs_f64() * 1e3
            );
        }
    }
}
