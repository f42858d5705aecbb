// Target of the client tests, read from the environment so that the same files run against Huddle
// (started by the Rust harness, which sets these) or against Kamailio (bench/kamailio).
//
//   HUDDLE_WS_URL   ws://127.0.0.1:8080      required for every test that talks SIP
//   HUDDLE_DOMAIN   example.test             default example.test
//   HUDDLE_USERS    alice:alice-pw,bob:bob-pw,carol:carol-pw   (that is also the default)
//   HUDDLE_TEST_TIMEOUT_MS  per-wait timeout for SIP events, default 10000
//   CHROMIUM_PATH   default /usr/bin/chromium (Debian's; never a downloaded browser)

const DEFAULT_USERS = 'alice:alice-pw,bob:bob-pw,carol:carol-pw';

export function target() {
  const wsUrl = process.env.HUDDLE_WS_URL;
  if (!wsUrl) {
    throw new Error(
      'HUDDLE_WS_URL is not set: point it at the server under test (e.g. ws://127.0.0.1:8080); ' +
        'see tests/clients/README.md',
    );
  }
  if (!/^wss?:\/\//.test(wsUrl)) throw new Error(`HUDDLE_WS_URL must be ws:// or wss://, got ${wsUrl}`);
  const domain = process.env.HUDDLE_DOMAIN || 'example.test';
  const users = {};
  for (const entry of (process.env.HUDDLE_USERS || DEFAULT_USERS).split(',')) {
    const item = entry.trim();
    if (!item) continue;
    const i = item.indexOf(':');
    if (i <= 0) throw new Error(`HUDDLE_USERS entry "${item}" is not user:password`);
    users[item.slice(0, i)] = item.slice(i + 1);
  }
  return { wsUrl, domain, users };
}

/** The credentials of `name`, or a clear failure if HUDDLE_USERS does not list it. */
export function user(t, name) {
  const password = t.users[name];
  if (password === undefined) {
    throw new Error(`HUDDLE_USERS has no user "${name}" (have: ${Object.keys(t.users).join(', ')})`);
  }
  return { name, password, aor: `sip:${name}@${t.domain}` };
}

export const WAIT_MS = Number(process.env.HUDDLE_TEST_TIMEOUT_MS || 10000);
// Loading a test page in Chromium (its SIP bundles) and the page's start-up: seconds on a quiet
// machine, but a 2-core runner at full load (a second Chromium, GStreamer, the build's leftovers)
// took more than 10 s: WAIT_MS is for SIP events, this bound only decides when a hung load is
// reported.
export const PAGE_MS = Number(process.env.HUDDLE_PAGE_TIMEOUT_MS || 60000);
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
