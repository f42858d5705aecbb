//! Where each participant's tile goes on the canvas: pure geometry, unit-tested.
//!
//! * `grid`: the smallest of 1, 2, 4, 6, 9, 16 tiles that holds everyone (more than 16: the
//!   first 16), as 1×1, 2×1, 2×2, 3×2, 3×3, 4×4, each tile keeping the canvas's aspect ratio
//!   inside its cell (letterboxed, centred).
//! * `speaker`: one *featured* tile big (the top 3/4 of the canvas), everyone else as
//!   thumbnails in a row along the bottom quarter (at most 6). Which tile is featured is the
//!   caller's choice, not geometry: the room features its active speaker; a layout that
//!   features something else (a shared screen) needs only another choice, not other shapes.
//! * while a screen is shared ([`arrange`] with `presenting`), the room shows the *presenter*
//!   layout whatever its own: the screen as the featured tile, every participant a thumbnail;
//!   when the presentation ends the room's own layout comes back.
//! * name labels: where a tile's name goes on the canvas ([`label_px`], [`label_place`]): at the
//!   tile's displayed size (a font a fifteenth of its height), in its bottom-left corner, or
//!   centred on a placeholder; the canvas draws them (`media.rs`), not each decoded frame.

use huddle_sdk::serde::Deserialize;

/// Which layout a room uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum LayoutKind {
    /// Automatic grid.
    #[default]
    Grid,
    /// Active speaker big, thumbnails below.
    Speaker,
}

/// A tile: position and size in pixels; all even, so I420 chroma lines up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// Columns × rows of the grid for `n` participants.
pub fn grid_shape(n: usize) -> (u32, u32) {
    match n {
        0 | 1 => (1, 1),
        2 => (2, 1),
        3 | 4 => (2, 2),
        5 | 6 => (3, 2),
        7..=9 => (3, 3),
        _ => (4, 4),
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

/// Fits a `width`×`height`-shaped tile into a cell, centred.
fn fit(cell: Rect, width: u32, height: u32) -> Rect {
    // Scale to the cell's width, or to its height if that is the tighter side.
    let (w, h) = if u64::from(cell.w) * u64::from(height) <= u64::from(cell.h) * u64::from(width) {
        (
            cell.w,
            (u64::from(cell.w) * u64::from(height) / u64::from(width.max(1))) as u32,
        )
    } else {
        (
            (u64::from(cell.h) * u64::from(width) / u64::from(height.max(1))) as u32,
            cell.h,
        )
    };
    let (w, h) = (even(w).max(2), even(h).max(2));
    Rect {
        x: even(cell.x + (cell.w - w.min(cell.w)) / 2),
        y: even(cell.y + (cell.h - h.min(cell.h)) / 2),
        w,
        h,
    }
}

/// Tiles for `n` tiles (in order) on a `width`×`height` canvas; `featured` is the index of the
/// tile shown big by [`LayoutKind::Speaker`] (the first when `None`). Tiles beyond the layout's
/// capacity get no place (`None`).
pub fn tiles(
    kind: LayoutKind,
    n: usize,
    width: u32,
    height: u32,
    featured: Option<usize>,
) -> Vec<Option<Rect>> {
    match kind {
        LayoutKind::Grid => grid(n, width, height),
        LayoutKind::Speaker if n <= 1 => grid(n, width, height),
        LayoutKind::Speaker => featured_layout(n, width, height, featured.unwrap_or(0).min(n - 1)),
    }
}

/// What the canvas shows: the shared screen's place (when one is shared) and each
/// participant's, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrangement {
    /// The shared screen: `Some` exactly while presenting.
    pub screen: Option<Rect>,
    /// Each participant's tile; `None`: no room for it.
    pub tiles: Vec<Option<Rect>>,
}

/// The name of the layout shown: the room's own (`grid`, `speaker`) or `presenter` while a
/// screen is shared. Published in the room record.
pub fn shown(kind: LayoutKind, presenting: bool) -> &'static str {
    match (presenting, kind) {
        (true, _) => "presenter",
        (false, LayoutKind::Grid) => "grid",
        (false, LayoutKind::Speaker) => "speaker",
    }
}

/// Places `n` participants and, when `presenting`, the shared screen on a `width`×`height`
/// canvas. Presenting: the screen takes the featured place, the participants (up to six)
/// the thumbnails, whatever `kind` is; otherwise [`tiles`] with `speaker` featured.
pub fn arrange(
    kind: LayoutKind,
    n: usize,
    width: u32,
    height: u32,
    speaker: Option<usize>,
    presenting: bool,
) -> Arrangement {
    if !presenting {
        return Arrangement {
            screen: None,
            tiles: tiles(kind, n, width, height, speaker),
        };
    }
    // The screen is tile 0 of a featured layout, featured.
    let mut all = featured_layout(n + 1, width, height, 0).into_iter();
    Arrangement {
        screen: all.next().flatten(),
        tiles: all.collect(),
    }
}

fn grid(n: usize, width: u32, height: u32) -> Vec<Option<Rect>> {
    let (cols, rows) = grid_shape(n);
    let (cw, ch) = (width / cols, height / rows);
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).ok().filter(|&i| i < cols * rows)?;
            let cell = Rect {
                x: (i % cols) * cw,
                y: (i / cols) * ch,
                w: cw,
                h: ch,
            };
            Some(fit(cell, width, height))
        })
        .collect()
}

fn featured_layout(n: usize, width: u32, height: u32, featured: usize) -> Vec<Option<Rect>> {
    const THUMBS: u32 = 6;
    let big_h = even(height * 3 / 4);
    let big = fit(
        Rect {
            x: 0,
            y: 0,
            w: width,
            h: big_h,
        },
        width,
        height,
    );
    let tw = width / THUMBS;
    let mut next = 0u32;
    (0..n)
        .map(|i| {
            if i == featured {
                return Some(big);
            }
            if next >= THUMBS {
                return None;
            }
            let cell = Rect {
                x: next * tw,
                y: big_h,
                w: tw,
                h: height - big_h,
            };
            next += 1;
            Some(fit(cell, width, height))
        })
        .collect()
}

/// The font size (pixels) of the name label on `tile`: a fifteenth of its height, as a 24 px
/// label on a 360-line picture, between 10 (still legible on a thumbnail) and 48.
pub fn label_px(tile: Rect) -> u32 {
    (tile.h / 15).clamp(10, 48)
}

/// Where a rendered `w`×`h` label goes on `tile`: its bottom-left corner, one font size in from
/// both edges, or its centre (`centred`: a placeholder's name). A label too big for the tile is
/// scaled down to fit, keeping its shape; `None` when the tile has no room for one. Even, like
/// every tile, so the label's chroma lines up with the canvas's.
pub fn label_place(tile: Rect, w: u32, h: u32, centred: bool) -> Option<Rect> {
    let pad = label_px(tile);
    let room_w = tile.w.saturating_sub(2 * pad);
    let room_h = tile.h.saturating_sub(2 * pad);
    if w == 0 || h == 0 || room_w < 8 || room_h < 8 {
        return None;
    }
    let (w, h) = if w > room_w || h > room_h {
        // The tighter side sets the scale.
        if u64::from(w) * u64::from(room_h) >= u64::from(h) * u64::from(room_w) {
            (
                room_w,
                (u64::from(h) * u64::from(room_w) / u64::from(w)) as u32,
            )
        } else {
            (
                (u64::from(w) * u64::from(room_h) / u64::from(h)) as u32,
                room_h,
            )
        }
    } else {
        (w, h)
    };
    let (w, h) = (even(w).max(2), even(h).max(2));
    let (x, y) = if centred {
        (tile.x + (tile.w - w) / 2, tile.y + (tile.h - h) / 2)
    } else {
        (tile.x + pad, tile.y + tile.h - pad - h)
    };
    Some(Rect {
        x: even(x),
        y: even(y),
        w,
        h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sizes_are_1_2_4_6_9_16() {
        let sizes: Vec<u32> = [1, 2, 3, 4, 5, 6, 7, 9, 10, 16, 20]
            .iter()
            .map(|&n| {
                let (c, r) = grid_shape(n);
                c * r
            })
            .collect();
        assert_eq!(sizes, [1, 2, 4, 4, 6, 6, 9, 9, 16, 16, 16]);
    }

    #[test]
    fn tiles_stay_on_the_canvas_do_not_overlap_and_are_even() {
        for n in 1..=20 {
            let t: Vec<Rect> = tiles(LayoutKind::Grid, n, 1280, 720, None)
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(t.len(), n.min(16));
            for (i, a) in t.iter().enumerate() {
                assert!(a.x + a.w <= 1280 && a.y + a.h <= 720, "{n}: {a:?}");
                assert!(a.w % 2 == 0 && a.h % 2 == 0 && a.x % 2 == 0 && a.y % 2 == 0);
                for b in &t[i + 1..] {
                    let apart = a.x + a.w <= b.x
                        || b.x + b.w <= a.x
                        || a.y + a.h <= b.y
                        || b.y + b.h <= a.y;
                    assert!(apart, "{n}: {a:?} overlaps {b:?}");
                }
            }
        }
    }

    #[test]
    fn one_person_fills_the_canvas_two_sit_side_by_side() {
        assert_eq!(
            tiles(LayoutKind::Grid, 1, 640, 360, None),
            [Some(Rect {
                x: 0,
                y: 0,
                w: 640,
                h: 360
            })]
        );
        let two = tiles(LayoutKind::Grid, 2, 640, 360, None);
        assert_eq!(two[0].unwrap().w, 320);
        assert_eq!(two[1].unwrap().x, 320);
    }

    #[test]
    fn a_shared_screen_switches_any_layout_to_presenter_and_back() {
        for kind in [LayoutKind::Grid, LayoutKind::Speaker] {
            let before = arrange(kind, 2, 1280, 720, Some(1), false);
            assert_eq!(before.screen, None);
            assert_eq!(before.tiles, tiles(kind, 2, 1280, 720, Some(1)));
            assert_eq!(
                shown(kind, false),
                if kind == LayoutKind::Grid {
                    "grid"
                } else {
                    "speaker"
                }
            );

            let during = arrange(kind, 2, 1280, 720, Some(1), true);
            let screen = during.screen.expect("the screen has a place");
            assert_eq!(shown(kind, true), "presenter");
            // The screen is big, across the top three quarters, centred.
            assert!(screen.h >= 500 && screen.y == 0, "{screen:?}");
            assert_eq!(screen.x + screen.w / 2, 640, "{screen:?}");
            // Both participants are thumbnails below it, side by side, not overlapping it.
            assert_eq!(during.tiles.len(), 2);
            for t in during.tiles.iter().map(|t| t.expect("a thumbnail each")) {
                assert!(t.y >= screen.y + screen.h && t.h < 200, "{t:?}");
            }
            assert_ne!(during.tiles[0], during.tiles[1]);

            let after = arrange(kind, 2, 1280, 720, Some(1), false);
            assert_eq!(after, before, "the room's own layout comes back");
        }
        // Nobody (yet) in the room: the screen alone.
        let alone = arrange(LayoutKind::Grid, 0, 640, 360, None, true);
        assert!(alone.screen.is_some() && alone.tiles.is_empty());
        // Six thumbnails at most.
        let crowd = arrange(LayoutKind::Grid, 9, 1280, 720, None, true);
        assert_eq!(crowd.tiles.iter().flatten().count(), 6);
    }

    #[test]
    fn the_speaker_is_big_and_the_others_are_thumbnails() {
        let t = tiles(LayoutKind::Speaker, 3, 1280, 720, Some(2));
        let big = t[2].unwrap();
        assert!(big.h >= 500, "{big:?}");
        assert!(t[0].unwrap().h < 200 && t[0].unwrap().y >= 540);
        assert_ne!(t[0], t[1]);
        let many = tiles(LayoutKind::Speaker, 10, 1280, 720, Some(0));
        assert_eq!(many.iter().flatten().count(), 7, "speaker + 6 thumbnails");
    }

    fn inside(inner: Rect, outer: Rect) -> bool {
        inner.x >= outer.x
            && inner.y >= outer.y
            && inner.x + inner.w <= outer.x + outer.w
            && inner.y + inner.h <= outer.y + outer.h
    }

    #[test]
    fn labels_sit_bottom_left_inside_their_tile_in_every_layout() {
        let (cw, ch) = (1280, 720);
        let mut arrangements = Vec::new();
        for n in [1, 2, 4, 6, 9, 16] {
            arrangements.push(arrange(LayoutKind::Grid, n, cw, ch, None, false));
            arrangements.push(arrange(LayoutKind::Speaker, n, cw, ch, Some(n / 2), false));
            arrangements.push(arrange(LayoutKind::Grid, n, cw, ch, None, true));
        }
        for a in &arrangements {
            for tile in a.screen.iter().chain(a.tiles.iter().flatten()) {
                let px = label_px(*tile);
                // A name of ten characters at that size, about as a renderer gives it.
                let (w, h) = (px * 6, px * 3 / 2);
                let label = label_place(*tile, w, h, false).expect("room for a label");
                assert!(inside(label, *tile), "{label:?} in {tile:?}");
                assert_eq!(
                    (label.x % 2, label.y % 2, label.w % 2, label.h % 2),
                    (0, 0, 0, 0)
                );
                // Left, at the bottom: in the tile's lower-left quarter.
                assert!(label.x < tile.x + tile.w / 2, "{label:?} in {tile:?}");
                assert!(label.y >= tile.y + tile.h / 2, "{label:?} in {tile:?}");
                // On the same tile's labels of other tiles do not land (tiles do not overlap).
                let centred = label_place(*tile, w, h, true).expect("room for a label");
                assert!(inside(centred, *tile), "{centred:?} in {tile:?}");
                let (mid_x, mid_y) = (tile.x + tile.w / 2, tile.y + tile.h / 2);
                assert!(centred.x <= mid_x && centred.x + centred.w >= mid_x);
                assert!(centred.y <= mid_y && centred.y + centred.h >= mid_y);
            }
        }
    }

    #[test]
    fn the_label_follows_the_tile_size() {
        let grid4 = tiles(LayoutKind::Grid, 4, 1280, 720, None)[0].unwrap();
        let grid16 = tiles(LayoutKind::Grid, 16, 1280, 720, None)[0].unwrap();
        let speaker = tiles(LayoutKind::Speaker, 3, 1280, 720, Some(0));
        // A 640x360 tile gets the 24 px the label had on a decoded 640x360 frame.
        assert_eq!(label_px(grid4), 24);
        assert_eq!(label_px(grid16), 12);
        assert!(label_px(speaker[0].unwrap()) > label_px(grid4));
        assert_eq!(label_px(speaker[1].unwrap()), 10, "thumbnails stay legible");
    }

    #[test]
    fn a_label_too_wide_for_its_tile_is_scaled_down_and_a_tiny_tile_has_none() {
        let tile = Rect {
            x: 100,
            y: 50,
            w: 200,
            h: 120,
        };
        let label = label_place(tile, 900, 30, false).expect("scaled");
        assert_eq!(label.w, 200 - 2 * label_px(tile));
        assert!(label.h < 30 && label.h >= 2);
        assert!(inside(label, tile));
        let tall = label_place(tile, 40, 400, true).expect("scaled");
        assert!(inside(tall, tile) && tall.h <= 100);
        let tiny = Rect {
            x: 0,
            y: 0,
            w: 20,
            h: 20,
        };
        assert_eq!(label_place(tiny, 10, 10, false), None);
        assert_eq!(label_place(tile, 0, 10, false), None);
    }
}
