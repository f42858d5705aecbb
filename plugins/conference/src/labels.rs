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

/// A rendered label: AYUV pixels (not premultiplied) with their video meta, as an overlay
/// rectangle wants them.
#[derive(Debug, Clone)]
pub struct Label {
    /// The pixels, cropped to the text and its outline.
    pub pixels: gst::Buffer,
    /// Their width.
    pub width: u32,
    /// Their height.
    pub height: u32,
}

impl Label {
    /// The label drawn at `(x, y)`, `w`×`h` on the canvas (scaled by GStreamer, once, when
    /// that is not its own size).
    pub fn at(&self, x: u32, y: u32, w: u32, h: u32) -> gst_video::VideoOverlayRectangle {
        gst_video::VideoOverlayRectangle::new_raw(
            &self.pixels,
            x as i32,
            y as i32,
            w,
            h,
            gst_video::VideoOverlayFormatFlags::empty(),
        )
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
        let mut pixels = gst::Buffer::from_mut_slice(out);
        gst_video::VideoMeta::add(
            pixels.get_mut()?,
            gst_video::VideoFrameFlags::empty(),
            gst_video::VideoFormat::Ayuv,
            w,
            h,
        )
        .ok()?;
        Some(Label {
            pixels,
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
        let map = big.pixels.map_readable().unwrap();
        let lumas: Vec<u8> = map
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
        let pixels = gst::Buffer::with_size(4).unwrap();
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
}
