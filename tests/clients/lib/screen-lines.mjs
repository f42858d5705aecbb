// Helpers of the screen-share browser tests (tests/clients/browser/screenshare*.test.mjs): a test
// phone page per user, screen lines in it (tests/clients/browser/screenshare-page.js: a second
// JsSIP user agent that presents or watches a screen URI), their getStats, and the wait for a
// viewer to decode what a presenter sends.

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { user, WAIT_MS, PAGE_MS } from './env.mjs';
import { withTimeout } from './wait.mjs';
import { newPhoneContext } from './chromium.mjs';

export const MEDIA_MS = Number(process.env.HUDDLE_MEDIA_TIMEOUT_MS || 60000);
const LINE_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../browser/screenshare-page.js');

export async function inPage(page, label, what, fn, arg, ms = WAIT_MS) {
  try {
    return await withTimeout(page.evaluate(fn, arg), `${label}: ${what}`, ms + 2000);
  } catch (e) {
    const msg = String(e?.message ?? e).replace(/^page\.evaluate: Error: /, '');
    throw new Error(msg.startsWith(label) ? msg : `${label}: ${what}: ${msg}`);
  }
}

/**
 * A page whose phone is registered, with the screen-line script loaded; with `lib` ('jssip' or
 * 'sipjs') its phone also joins `room` (the conference plugin) with camera and microphone.
 */
export async function openPhone(browser, origin, tg, name, lib, room, cleanup, diag) {
  const label = `${name}[${lib ?? 'no room'}]`;
  const { context, page } = await newPhoneContext(browser, origin, label, diag);
  cleanup.push(() => context.close());
  await withTimeout(page.goto(`${origin}/`), `${label}: page load`, PAGE_MS);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: PAGE_MS });
  await page.addScriptTag({ path: LINE_SCRIPT });
  cleanup.push(() => inPage(page, label, 'stop', (ms) => window.phone.stop(ms), 3000, 3000).catch(() => {}));
  const u = user(tg, name);
  const o = { lib: lib ?? 'jssip', wsUrl: tg.wsUrl, uri: u.aor, user: u.name, password: u.password, autoAnswer: false, label };
  await inPage(page, label, 'registered', (a) => window.phone.start(a.o, a.ms), { o, ms: WAIT_MS });
  if (lib) {
    await inPage(page, label, 'INVITE to the room', (to) => window.phone.call(to), `sip:${room}@${tg.domain}`);
    await inPage(page, label, "in the room ('established')", (ms) => window.phone.waitFor('established', ms, ['failed', 'ended']), MEDIA_MS, MEDIA_MS);
  }
  return { page, label, name };
}

/** Opens screen line `line` of `who` (a second JsSIP user agent in the page). */
export async function openLine(who, tg, line, cleanup) {
  const u = user(tg, who.name);
  await inPage(
    who.page,
    who.label,
    `screen line '${line}' connected`,
    (a) => {
      window.screenLines[a.line]?.stop();
      window.screenLines[a.line] = new window.ScreenLine(a.line);
      return window.screenLines[a.line].start(a.o, a.ms).then(() => true);
    },
    { line, o: { wsUrl: tg.wsUrl, uri: u.aor, password: u.password }, ms: WAIT_MS },
  );
  cleanup.push(() => inPage(who.page, who.label, 'stop line', (l) => window.screenLines[l]?.stop(), line).catch(() => {}));
}

export const onLine = (who, line, what, fn, arg, ms) => inPage(who.page, who.label, `${line}: ${what}`, fn, { line, arg }, ms);
export const lineStats = (who, line) => onLine(who, line, 'getStats()', (a) => window.screenLines[a.line].stats());
export const lineWait = (who, line, names, failOn, ms = MEDIA_MS) =>
  onLine(who, line, `waiting for ${names}`, (a) => window.screenLines[a.line].waitFor(a.arg.names, a.arg.ms, a.arg.failOn), { names, failOn, ms }, ms);
/** The names of the events line `line` of `who` has seen so far. */
export const lineEvents = (who, line) => onLine(who, line, 'events', (a) => window.screenLines[a.line].events.map((e) => e.name));

/**
 * Waits until line `view` of `viewer` decodes frames at the size line `present` of `presenter`
 * encodes, then requires decoding to go on (two samples, rising). Polling: there is no event for
 * "frames decoded". Returns the viewer's last inbound stats.
 */
export async function awaitRelayedScreen(viewer, presenter, diag, { view = 'view', present = 'present' } = {}) {
  const deadline = Date.now() + MEDIA_MS;
  let first = null;
  let sent = null;
  while (Date.now() < deadline) {
    const s = await lineStats(viewer, view);
    sent = (await lineStats(presenter, present))?.outbound;
    if (s?.inbound?.framesDecoded > 0 && sent?.frameWidth > 0 && s.inbound.frameWidth === sent.frameWidth && s.inbound.frameHeight === sent.frameHeight) {
      first = s.inbound;
      break;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  if (!first) {
    throw new Error(
      `${viewer.label}: timed out after ${MEDIA_MS} ms waiting for relayed frames at ${presenter.label}'s size; viewer: ${JSON.stringify(await lineStats(viewer, view))}; presenter: ${JSON.stringify(sent)}`,
    );
  }
  let second = first;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    second = (await lineStats(viewer, view)).inbound;
    if (second.framesDecoded > first.framesDecoded) break;
  }
  diag(`${viewer.label} viewing ${presenter.label}: ${JSON.stringify(first)} then ${JSON.stringify(second)}; presenter sends ${JSON.stringify(sent)}`);
  assert.ok(second.framesDecoded > first.framesDecoded, `${viewer.label}: relayed frames keep decoding`);
  assert.ok(second.keyFramesDecoded >= 1, `${viewer.label}: a key frame reached the viewer`);
  assert.equal(second.frameWidth, sent.frameWidth, `the viewer decodes ${presenter.label}'s width`);
  assert.equal(second.frameHeight, sent.frameHeight, `the viewer decodes ${presenter.label}'s height`);
  return second;
}
