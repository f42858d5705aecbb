// Bounded waiting: every wait names what it awaits, so a timeout says what did not happen.

import { WAIT_MS } from './env.mjs';

// Waits still pending when a test ends (say, the receive side of a MESSAGE whose send failed) are
// cancelled by cleanupAll: their timers cleared, their listeners removed, their rejection ignored.
const pending = new Set();

/** Resolve with `promise`, or reject after `ms` with "timed out after Nms waiting for <what>". */
export function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  let cancel;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    cancel = () => {
      clearTimeout(timer);
      reject(new Error(`cancelled (test ended) while waiting for ${what}`));
    };
  });
  const entry = { cancel: () => cancel() };
  pending.add(entry);
  const p = Promise.race([promise, timeout]).finally(() => {
    clearTimeout(timer);
    pending.delete(entry);
  });
  // Never an unhandled rejection: a wait nobody awaits any more must not crash the run. Callers that
  // await `p` still get the rejection.
  p.catch(() => {});
  return p;
}

/** Cancel every wait still pending (called from cleanupAll). */
export function cancelPendingWaits() {
  for (const entry of [...pending]) entry.cancel();
}

/**
 * Wait for `event` on a Node-style emitter (`on`/`off` or `removeListener`), optionally failing early on
 * any of `failOn` events (e.g. 'registrationFailed'). Resolves with the first event argument.
 */
export function once(emitter, event, what, { failOn = [], ms = WAIT_MS, filter = () => true } = {}) {
  const off = (name, fn) => (emitter.off ? emitter.off(name, fn) : emitter.removeListener(name, fn));
  const handlers = [];
  const p = new Promise((resolve, reject) => {
    const ok = (arg) => {
      if (!filter(arg)) return;
      resolve(arg);
    };
    emitter.on(event, ok);
    handlers.push([event, ok]);
    for (const bad of failOn) {
      const fn = (arg) => reject(new Error(`${what}: got '${bad}' instead (${describe(arg)})`));
      emitter.on(bad, fn);
      handlers.push([bad, fn]);
    }
  });
  return handled(
    withTimeout(p, what, ms).finally(() => {
      for (const [name, fn] of handlers) off(name, fn);
    }),
  );
}

/** Mark a promise as handled (no unhandledRejection if nobody ends up awaiting it); returns it. */
export function handled(p) {
  p.catch(() => {});
  return p;
}

/** A promise with its resolve/reject exposed, for callbacks that are not emitters. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A short human-readable description of a JsSIP/SIP.js event payload. */
export function describe(arg) {
  if (arg === undefined || arg === null) return String(arg);
  if (arg.response) return `${arg.response.status_code ?? arg.response.statusCode} ${arg.response.reason_phrase ?? arg.response.reasonPhrase ?? ''} cause=${arg.cause ?? ''}`;
  if (arg.cause) return `cause=${arg.cause}`;
  if (arg instanceof Error) return arg.message;
  if ('code' in arg || 'reason' in arg) return `code=${arg.code} reason=${arg.reason ?? ''}`;
  return String(arg);
}

/**
 * Run every cleanup step, last registered first (so a page is stopped before its context closes, and a
 * context before its browser), even if some throw; report failures on stderr without masking the test's
 * own error. Pending waits are cancelled first.
 */
export async function cleanupAll(steps) {
  cancelPendingWaits();
  const errors = [];
  for (const step of steps.splice(0).reverse()) {
    try {
      await step();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length) {
    console.error(`# cleanup: ${errors.length} step(s) failed: ${errors.map((e) => e?.message ?? e).join('; ')}`);
  }
}
