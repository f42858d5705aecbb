// A tiny HTTP server on 127.0.0.1 (port 0) for the browser tests: the page, the JsSIP bundle and the
// SIP.js ES modules (served straight from node_modules/sip.js/lib: they are browser-ready ESM).

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleCjs } from './cjs-bundle.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8' };

/** Map a URL path to a file under one of the served roots, refusing anything that escapes it. */
function fileFor(urlPath) {
  const mounts = [
    ['/sipjs/', path.join(ROOT, 'node_modules/sip.js/lib')],
    ['/page/', path.join(ROOT, 'browser/page')],
  ];
  for (const [prefix, dir] of mounts) {
    if (!urlPath.startsWith(prefix)) continue;
    const file = path.resolve(dir, `.${urlPath.slice(prefix.length - 1)}`);
    if (!file.startsWith(dir + path.sep)) return undefined;
    return file;
  }
  return undefined;
}

export async function startStaticServer() {
  const jssip = bundleCjs(path.join(ROOT, 'node_modules/jssip/lib/JsSIP.js'), 'JsSIP');
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (urlPath === '/jssip.js') {
      res.writeHead(200, { 'content-type': TYPES['.js'], 'cache-control': 'no-store' });
      res.end(jssip);
      return;
    }
    if (urlPath === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const file = fileFor(urlPath === '/' ? '/page/phone.html' : urlPath);
    if (!file) {
      res.writeHead(404).end('not found');
      return;
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(data);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
