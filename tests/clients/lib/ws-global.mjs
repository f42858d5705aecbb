// SIP.js's web transport calls `new WebSocket(server, 'sip')`; Node 20 has no global WebSocket, so give
// it the `ws` package's (browser-compatible: addEventListener, binaryType 'arraybuffer'). Import this
// module before sip.js.
import WebSocket from 'ws';

if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WebSocket;
