// A minimal CommonJS bundler, so that JsSIP (published on npm as CommonJS under lib/, with no browser
// build since 3.10) can run in a browser page without adding a bundler to the dependencies.
//
// It follows literal `require('…')` calls from an entry file: relative paths (.js, .json, /index.js) and
// bare package names (package.json `browser` string, else `main`, else index.js) found in node_modules.
// Node built-ins are refused. The result is one classic script that sets `globalThis[globalName]`.

import fs from 'node:fs';
import path from 'node:path';

const REQUIRE_RE = /\brequire\(\s*(['"])([^'"]+)\1\s*\)/g;

function fileCandidates(p) {
  return [p, `${p}.js`, `${p}.json`, path.join(p, 'index.js')];
}

function firstFile(cands) {
  for (const c of cands) {
    try {
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // not this one
    }
  }
  return undefined;
}

function resolveBare(spec, fromDir) {
  const parts = spec.split('/');
  const name = spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  const sub = parts.slice(spec.startsWith('@') ? 2 : 1).join('/');
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const pkgDir = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(pkgDir, 'package.json'))) {
      if (sub) return firstFile(fileCandidates(path.join(pkgDir, sub)));
      const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
      const main = typeof pkg.browser === 'string' ? pkg.browser : pkg.main || 'index.js';
      return firstFile(fileCandidates(path.join(pkgDir, main)));
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

function resolve(spec, fromFile) {
  const fromDir = path.dirname(fromFile);
  const found =
    spec.startsWith('.') || spec.startsWith('/')
      ? firstFile(fileCandidates(path.resolve(fromDir, spec)))
      : resolveBare(spec, fromDir);
  if (!found) throw new Error(`cjs-bundle: cannot resolve require('${spec}') from ${fromFile}`);
  return found;
}

/** Bundle `entry` (absolute path) and its dependency graph into a browser script exposing `globalName`. */
export function bundleCjs(entry, globalName) {
  const ids = new Map(); // absolute path -> numeric id
  const defs = [];
  const queue = [path.resolve(entry)];
  ids.set(queue[0], 0);
  while (queue.length) {
    const file = queue.shift();
    const id = ids.get(file);
    const src = fs.readFileSync(file, 'utf8');
    const deps = {};
    let code;
    if (file.endsWith('.json')) {
      code = `module.exports = ${src.trim()};`;
    } else {
      code = src;
      for (const m of src.matchAll(REQUIRE_RE)) {
        const spec = m[2];
        if (deps[spec] !== undefined) continue;
        const target = resolve(spec, file);
        if (!ids.has(target)) {
          ids.set(target, ids.size);
          queue.push(target);
        }
        deps[spec] = ids.get(target);
      }
    }
    defs[id] = `/* ${path.relative(process.cwd(), file)} */ [function (module, exports, require) {\n${code}\n}, ${JSON.stringify(deps)}]`;
  }
  return `(function () {
var global = globalThis;
var process = globalThis.process || { env: {}, browser: true };
var defs = [
${defs.join(',\n')}
];
var cache = [];
function load(id) {
  if (cache[id]) return cache[id].exports;
  var module = (cache[id] = { exports: {} });
  var deps = defs[id][1];
  defs[id][0].call(module.exports, module, module.exports, function (spec) {
    if (!(spec in deps)) throw new Error('cjs-bundle: unknown require(' + spec + ')');
    return load(deps[spec]);
  });
  return module.exports;
}
globalThis[${JSON.stringify(globalName)}] = load(0);
})();
`;
}
