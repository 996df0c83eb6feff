// Builds the optional native backend addon at `npm install` / `npm ci` time. It never fails the
// install: without a compiler or the Debian libraries the toolkit simply runs without `native`,
// and the outcome is recorded in build/install-status.json so `scaleforge env` can say why.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const statusFile = path.join(here, 'build', 'install-status.json');
const APT_HINT = 'apt-get install -y libdnnl-dev libopenblas-dev g++ make python3, then `npm run build:native`';

function record(status) {
  mkdirSync(path.dirname(statusFile), { recursive: true });
  writeFileSync(statusFile, JSON.stringify({ ...status, at: new Date().toISOString() }, null, 2) + '\n');
}

/** npm hands its bundled node-gyp to lifecycle scripts; outside npm, look beside the npm that runs node. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  return candidates.find((c) => c && existsSync(c));
}

/** The first compiler/linker line that names what is missing, turned into a hint. */
function diagnose(log) {
  const lines = log.split('\n');
  const missingHeader = lines.find((l) => /fatal error: .*(dnnl|cblas).*No such file/.test(l));
  if (missingHeader) return `header not found (${missingHeader.replace(/^.*fatal error: /, '').trim()})`;
  const missingLib = lines.find((l) => /cannot find -l(dnnl|openblas)/.test(l));
  if (missingLib) return `library not found (${missingLib.replace(/^.*cannot find /, '').trim()})`;
  if (/(g\+\+|c\+\+|make): (not found|No such file)/.test(log) || /not found: (make|g\+\+)/.test(log)) return 'no C++ compiler or make';
  if (/Could not find any Python|gyp ERR!.*find Python/.test(log)) return 'python3 not found (node-gyp needs it)';
  // The compiler's first error says more than node-gyp's summary lines.
  const err = lines.find((l) => /error:/.test(l)) ?? lines.find((l) => /error/i.test(l));
  return err ? err.trim().slice(0, 300) : 'node-gyp rebuild failed';
}

if (process.env.SCALEFORGE_SKIP_NATIVE_BUILD) {
  record({ ok: false, reason: 'build skipped (SCALEFORGE_SKIP_NATIVE_BUILD is set)', hint: 'unset it and run `npm run build:native`' });
  process.exit(0);
}
const nodeGyp = findNodeGyp();
if (!nodeGyp) {
  record({ ok: false, reason: 'node-gyp not found (it ships with npm)', hint: APT_HINT });
  console.warn('scaleforge: native backend not built: node-gyp not found');
  process.exit(0);
}
const args = [nodeGyp, 'rebuild'];
// node-gyp otherwise downloads Node's headers, which fails offline; Debian's nodejs ships them in /usr.
if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h') && existsSync('/usr/include/node/common.gypi')) {
  args.push('--nodedir=/usr');
}
const run = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8', env: process.env });
const log = `${run.stdout ?? ''}\n${run.stderr ?? ''}`;
mkdirSync(path.join(here, 'build'), { recursive: true });
writeFileSync(path.join(here, 'build', 'install.log'), log);
if (run.status === 0 && existsSync(path.join(here, 'build', 'Release', 'scaleforge_native.node'))) {
  // The image addon (libjpeg-turbo, curation) is built only where jpeglib.h is found (native/jpeg_available.sh).
  const image = existsSync(path.join(here, 'build', 'Release', 'scaleforge_image.node'));
  record({ ok: true, image });
  console.log(`scaleforge: native backend built (oneDNN + OpenBLAS)${image ? ' and the image addon (libjpeg-turbo)' : '; image addon skipped (no jpeglib.h: apt-get install libjpeg62-turbo-dev)'}`);
} else {
  const reason = run.error ? `could not run node-gyp: ${run.error.message}` : diagnose(log);
  record({ ok: false, reason, hint: APT_HINT, log: 'native/build/install.log' });
  console.warn(`scaleforge: native backend not built (${reason}); the toolkit falls back to wasm. To enable it: ${APT_HINT}`);
}
process.exit(0);
