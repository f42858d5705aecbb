// The conference composite as a viewer's page decodes it, for the browser tests that watch its
// layout change (tests/clients/browser/conference-presenter*.test.mjs): the mean luma of a few
// regions of the remote <video> drawn to a canvas, and a bounded poll for a predicate on them.

import { inPage, MEDIA_MS } from './screen-lines.mjs';

// Mean luma (0..255) below which a region counts as the black background, and the rise over it
// that counts as something drawn there.
export const BLACK = 30;
export const DRAWN = 25;

/**
 * The decoded composite's signature: mean luma of three regions, as fractions of the picture.
 * `top`: the top-centre band (background in the grid, the screen in the presenter layout);
 * `bottom`: the bottom-left band (background in the grid, thumbnails in the presenter layout);
 * `middle`: the left tile of the grid. Also the frames decoded, to see the picture move on.
 */
export function signature(who) {
  return inPage(who.page, who.label, 'composite pixels', async () => {
    const v = document.getElementById('remote');
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h) return null;
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const g = c.getContext('2d', { willReadFrequently: true });
    g.drawImage(v, 0, 0, w, h);
    const luma = (x0, y0, x1, y1) => {
      const d = g.getImageData(Math.round(x0 * w), Math.round(y0 * h), Math.max(1, Math.round((x1 - x0) * w)), Math.max(1, Math.round((y1 - y0) * h))).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      return Math.round(sum / (d.length / 4));
    };
    const stats = await window.phone.stats();
    return {
      w,
      h,
      top: luma(0.375, 0.03, 0.625, 0.2),
      bottom: luma(0.02, 0.82, 0.3, 0.95),
      middle: luma(0.05, 0.35, 0.45, 0.65),
      framesDecoded: stats?.video?.framesDecoded ?? 0,
    };
  });
}

/** Polls `who`'s composite until `pred` holds (bounded by MEDIA_MS); returns that signature. */
export async function awaitComposite(who, what, pred, diag) {
  const deadline = Date.now() + MEDIA_MS;
  let last = null;
  while (Date.now() < deadline) {
    last = await signature(who);
    if (last && pred(last)) {
      diag(`${who.label} composite ${what}: ${JSON.stringify(last)}`);
      return last;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${who.label}: timed out after ${MEDIA_MS} ms waiting for the composite ${what}; last: ${JSON.stringify(last)}`);
}

/** The grid of two: both cameras in the middle band, black above and below. */
export const isGrid = (s) => s.top < BLACK && s.bottom < BLACK && s.middle > BLACK;

/** The presenter layout, against the grid signature `before`: the top band and the bottom drawn. */
export const isPresenting = (before) => (s) => s.top > before.top + DRAWN && s.bottom > before.bottom + DRAWN;
