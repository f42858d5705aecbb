// A JsSIP Socket (https://jssip.net/documentation/3.10.x/api/socket/) over the `ws` package, because
// Node 20 has no global WebSocket and JsSIP's own WebSocketInterface needs one.
//
// Requests subprotocol 'sip' (RFC 7118). Text and binary frames are both handed to JsSIP as a string
// decoded as UTF-8, so non-ASCII bodies survive whichever frame type the server uses. Every frame
// sent and received is also recorded in `sent`/`received` and emitted as 'out'/'in' (a string) so tests
// can check the wire shape.

import { EventEmitter } from 'node:events';
import WebSocket from 'ws';

export class WsSocket extends EventEmitter {
  constructor(url) {
    super();
    const u = new URL(url);
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new TypeError(`not a WebSocket URL: ${url}`);
    this._url = url;
    this._via_transport = u.protocol === 'wss:' ? 'WSS' : 'WS';
    this._sip_uri = `sip:${u.hostname}${u.port ? `:${u.port}` : ''};transport=ws`;
    this._ws = null;
    this.sent = [];
    this.received = [];
    this.onconnect = () => {};
    this.ondisconnect = () => {};
    this.ondata = () => {};
  }

  get url() {
    return this._url;
  }

  get via_transport() {
    return this._via_transport;
  }

  set via_transport(value) {
    this._via_transport = String(value).toUpperCase();
  }

  get sip_uri() {
    return this._sip_uri;
  }

  connect() {
    if (this._ws && (this._ws.readyState === WebSocket.OPEN || this._ws.readyState === WebSocket.CONNECTING)) return;
    const ws = new WebSocket(this._url, 'sip', { handshakeTimeout: 5000 });
    this._ws = ws;
    ws.on('open', () => {
      if (ws.protocol !== 'sip') {
        // RFC 7118 §4: the server must agree on 'sip'. Report it loudly; JsSIP would carry on.
        console.error(`# WsSocket: server answered subprotocol "${ws.protocol}", expected "sip"`);
      }
      this.onconnect();
    });
    ws.on('message', (data, isBinary) => {
      const text = Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(data).toString('utf8');
      this.received.push({ text, binary: isBinary });
      this.emit('in', text, isBinary);
      this.ondata(text);
    });
    ws.on('close', (code, reason) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this.ondisconnect(code !== 1000, code, reason.toString());
    });
    // Errors are followed by 'close'; without a listener `ws` would throw.
    ws.on('error', (e) => {
      this.lastError = e;
    });
  }

  disconnect() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.removeAllListeners('message');
    ws.on('error', () => {});
    if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
    else ws.close(1000);
  }

  send(message) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
    this.sent.push(message);
    this.emit('out', message);
    this._ws.send(message);
    return true;
  }

  /** Close the socket hard (no JsSIP notification), for cleanup after a failed test. */
  terminate() {
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.on('error', () => {});
      ws.terminate();
    }
  }
}
