// Headless Debian Chromium driven by playwright-core. Never a downloaded browser: the executable is
// /usr/bin/chromium (or CHROMIUM_PATH). Flags from docs/TESTING.md: fake camera (640x480, moving) and
// microphone (beep), no permission prompts, WebRTC on loopback without mDNS host candidates, and no
// name resolution or background traffic to the outside world.

import fs from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM_PATH, PAGE_MS } from './env.mjs';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-default-apps',
  '--disable-sync',
  '--no-first-run',
  '--no-default-browser-check',
  '--metrics-recording-only',
  '--disable-dev-shm-usage',
];

export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`no Chromium at ${CHROMIUM_PATH}: install Debian's 'chromium' (apt-get install chromium) or set CHROMIUM_PATH`);
  }
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: 30000 });
}

/** A fresh context (its own profile: cookies, storage) with camera and microphone granted to `origin`. */
export async function newPhoneContext(browser, origin, label, log = console.log) {
  const context = await browser.newContext();
  // Page loads are bounded by PAGE_MS (env.mjs), not Playwright's 30 s default.
  context.setDefaultNavigationTimeout(PAGE_MS);
  await context.grantPermissions(['camera', 'microphone'], { origin });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning' || m.text().startsWith('[phone]') || m.text().startsWith('[sip]')) log(`${label} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => log(`${label} pageerror: ${e.message}`));
  return { context, page };
}
