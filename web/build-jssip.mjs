// Builds the browser script the demo page loads as /jssip.js: JsSIP is published on npm as
// CommonJS only (no browser build since 3.10), so its lib/JsSIP.js and what it requires are
// wrapped into one classic script that defines `JsSIP` (the same small bundler the browser tests
// use, tests/clients/lib/cjs-bundle.mjs; no bundler package needed).
//
//   node web/build-jssip.mjs [--jssip DIR] [--out FILE]
//     --jssip  the installed jssip package (default: web/node_modules/jssip)
//     --out    where to write (default: web/vendor/jssip.js, the [web] jssip default)

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleCjs } from '../tests/clients/lib/cjs-bundle.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? path.resolve(args[i + 1]) : fallback;
};
const jssip = option('--jssip', path.join(here, 'node_modules/jssip'));
const out = option('--out', path.join(here, 'vendor/jssip.js'));

const entry = path.join(jssip, 'lib/JsSIP.js');
if (!fs.existsSync(entry)) {
  console.error(`build-jssip: ${entry} not found; run 'npm ci' in web/ (scripts/install-deps.sh does)`);
  process.exit(1);
}
const { version } = JSON.parse(fs.readFileSync(path.join(jssip, 'package.json'), 'utf8'));
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `/* JsSIP ${version} (MIT), built by web/build-jssip.mjs */\n${bundleCjs(entry, 'JsSIP')}`);
console.log(`build-jssip: wrote ${out} (JsSIP ${version})`);
