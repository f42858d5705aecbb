// Helpers for the messaging-plugin tests: send a MESSAGE with JsSIP and get its final status whatever it
// is (202, 413, 486 … are answers under test, not failures), and collect several events in order.

import { withTimeout, handled } from './wait.mjs';

/** Send a MESSAGE with JsSIP; resolve with `{ status, reason }` of the final response. */
export function sendMessage(client, targetUri, body, contentType, extraHeaders = []) {
  const done = new Promise((resolve, reject) => {
    client.ua.sendMessage(targetUri, body, {
      contentType,
      extraHeaders,
      eventHandlers: {
        succeeded: (e) => resolve({ status: e.response.status_code, reason: e.response.reason_phrase }),
        failed: (e) => {
          // JsSIP's Message 'failed' carries the response (when there is one) as `response`.
          if (e.response && e.response.status_code) {
            resolve({ status: e.response.status_code, reason: e.response.reason_phrase });
          } else {
            reject(new Error(`${client.label}: MESSAGE to ${targetUri} failed without a response: ${e.cause}`));
          }
        },
      },
    });
  });
  return withTimeout(done, `${client.label}: final response to MESSAGE sent to ${targetUri}`);
}

/** Resolve with the first `n` `event` arguments from `emitter`, in order (bounded). */
export function collect(emitter, event, n, what) {
  const got = [];
  let fn;
  const p = new Promise((resolve) => {
    fn = (arg) => {
      got.push(arg);
      if (got.length === n) resolve(got);
    };
    emitter.on(event, fn);
  });
  return handled(withTimeout(p, `${what} (${n} expected)`).finally(() => emitter.off(event, fn)));
}
