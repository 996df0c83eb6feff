import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { convertPyTorchToSafetensors, isPyTorchPath } from '../io/pytorch_file.js';
import { readSafetensorsHeader } from '../io/safetensors.js';
import { JobError, UsageError } from '../util/errors.js';

/**
 * The pretrained networks evaluation needs, fetched once from where their authors publish them
 * and kept as safetensors in a cache folder (`$SCALEFORGE_CACHE/weights`, default
 * `~/.cache/scaleforge/weights`): one folder per weight set, a `manifest.json` recording each
 * file's source URL and sha256. Where the network is unreachable, the error names the URL and the
 * `--from` command that takes a file downloaded by hand instead.
 */

export interface WeightFile {
  /** Name in the cache folder after fetching (the download's own name). */
  name: string;
  url: string;
  /** Full sha256, or a prefix of it when only that is published (torch hub puts 8+ hex digits in the file name). */
  sha256?: string;
  /** Converted to this safetensors name after download (PyTorch pickles). */
  convertTo?: string;
  /** Not needed for loading (an alternative format, docs). */
  optional?: boolean;
}

export interface WeightSet {
  id: string;
  describe: string;
  /** What `resolveWeights` hands to loaders: a file or the folder. */
  entry: string;
  files: WeightFile[];
}

const HF = (repo: string, file: string) => `https://huggingface.co/${repo}/resolve/main/${file}`;
const clipFiles = (repo: string): WeightFile[] =>
  ['config.json', 'model.safetensors', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'preprocessor_config.json'].map((name) => ({
    name,
    url: HF(repo, name),
    ...(name.endsWith('config.json') && name !== 'config.json' ? { optional: true } : {}),
    ...(name === 'special_tokens_map.json' ? { optional: true } : {}),
  }));

const SETS: WeightSet[] = [
  {
    id: 'inception-fid',
    describe: "FID Inception v3 (TF 2015-12-05 graph, pytorch-fid's port)",
    entry: 'inception-fid.safetensors',
    files: [
      {
        name: 'pt_inception-2015-12-05-6726825d.pth',
        url: 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth',
        // torch hub convention: the hex run after the last '-' is the sha256 prefix.
        sha256: '6726825d',
        convertTo: 'inception-fid.safetensors',
      },
    ],
  },
  { id: 'clip-vit-b32', describe: 'OpenAI CLIP ViT-B/32 (Hugging Face CLIPModel)', entry: '.', files: clipFiles('openai/clip-vit-base-patch32') },
  { id: 'clip-vit-l14', describe: 'OpenAI CLIP ViT-L/14 (Hugging Face CLIPModel)', entry: '.', files: clipFiles('openai/clip-vit-large-patch14') },
];

export const WEIGHT_SETS: ReadonlyMap<string, WeightSet> = new Map(SETS.map((s) => [s.id, s]));

export function weightsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.SCALEFORGE_CACHE ? path.join(env.SCALEFORGE_CACHE, 'weights') : path.join(os.homedir(), '.cache', 'scaleforge', 'weights');
}

export function getWeightSet(id: string): WeightSet {
  const s = WEIGHT_SETS.get(id);
  if (!s) throw new UsageError(`unknown weights '${id}'; known: ${[...WEIGHT_SETS.keys()].join(', ')}`);
  return s;
}

export interface Manifest {
  id: string;
  files: Record<string, { sha256: string; bytes: number; source: string }>;
  fetched_at: string;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve())
      .on('error', reject);
  });
  return h.digest('hex');
}

function checkHash(file: string, actual: string, wf: WeightFile): void {
  if (wf.sha256 && !actual.startsWith(wf.sha256.toLowerCase())) {
    throw new JobError(`${file}: sha256 ${actual} does not match the published ${wf.sha256.length < 64 ? 'prefix ' : ''}${wf.sha256} for ${wf.name} (${wf.url}); the file is corrupt or a different file`);
  }
}

export interface FetchOptions {
  cacheDir?: string;
  /** A file or folder already downloaded by hand: used instead of the network. */
  from?: string;
  /** Replace the URL's origin+path prefix (mirrors; tests point it at an unreachable address). */
  urlOverride?: (url: string) => string;
  log?: (line: string) => void;
  fetchImpl?: typeof fetch;
}

/** Download (or take from `from`), verify, convert: returns the path loaders get. */
export async function fetchWeights(id: string, opts: FetchOptions = {}): Promise<string> {
  const set = getWeightSet(id);
  const dir = path.join(opts.cacheDir ?? weightsCacheDir(), set.id);
  const log = opts.log ?? (() => undefined);
  fs.mkdirSync(dir, { recursive: true });
  const manifest: Manifest = { id: set.id, files: {}, fetched_at: new Date().toISOString() };
  if (opts.from && set.files.length > 1 && fs.existsSync(opts.from) && !fs.statSync(opts.from).isDirectory()) {
    throw new UsageError(`--from ${opts.from}: ${set.id} is several files (${set.files.filter((f) => !f.optional).map((f) => f.name).join(', ')}); give the folder that holds them`);
  }
  // A hand-downloaded Hugging Face folder may hold only the PyTorch pickle: convert it in place of model.safetensors.
  if (opts.from && set.entry === '.' && fs.statSync(opts.from).isDirectory()) {
    const bin = path.join(opts.from, 'pytorch_model.bin');
    if (!fs.existsSync(path.join(opts.from, 'model.safetensors')) && fs.existsSync(bin)) {
      const r = await convertPyTorchToSafetensors(bin, path.join(dir, 'model.safetensors'), { metadata: { format: 'pt' } });
      log(`${set.id}: converted ${bin} → model.safetensors (${r.tensors} tensors)`);
    }
  }
  for (const wf of set.files) {
    const dest = path.join(dir, wf.name);
    let source = wf.url;
    const local = opts.from ? localCandidate(opts.from, wf) : undefined;
    if (local) {
      fs.copyFileSync(local, `${dest}.part`);
      fs.renameSync(`${dest}.part`, dest);
      source = path.resolve(local);
      log(`${set.id}: took ${wf.name} from ${local}`);
    } else if (!fs.existsSync(dest)) {
      if (opts.from && wf.optional) continue;
      const url = opts.urlOverride ? opts.urlOverride(wf.url) : wf.url;
      try {
        await download(url, dest, opts.fetchImpl ?? fetch, log);
      } catch (e) {
        if (wf.optional) {
          log(`${set.id}: optional ${wf.name} not fetched (${(e as Error).message})`);
          continue;
        }
        throw new JobError(
          `could not download ${wf.name} for ${set.id} from ${url}: ${(e as Error).message}\n` +
            `Download it by hand (browser, curl -L -o ${wf.name} ${url}) and run:\n` +
            `  scaleforge weights fetch ${set.id} --from ${set.files.length > 1 ? 'FOLDER_WITH_THE_FILES' : wf.name}\n` +
            `(or place it at ${dest})`,
        );
      }
      source = url;
    }
    const sha = await sha256File(dest);
    checkHash(dest, sha, wf);
    manifest.files[wf.name] = { sha256: sha, bytes: fs.statSync(dest).size, source };
    if (wf.convertTo) {
      const out = path.join(dir, wf.convertTo);
      const r = await convertPyTorchToSafetensors(dest, out, { metadata: { sha256_source: sha, source_url: wf.url } });
      manifest.files[wf.convertTo] = { sha256: await sha256File(out), bytes: fs.statSync(out).size, source: `converted from ${wf.name}` };
      log(`${set.id}: converted ${wf.name} → ${wf.convertTo} (${r.tensors} tensors)`);
    }
  }
  await writeFileAtomic(path.join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return path.join(dir, set.entry);
}

function localCandidate(from: string, wf: WeightFile): string | undefined {
  if (!fs.existsSync(from)) throw new UsageError(`--from ${from}: no such file or folder`);
  if (fs.statSync(from).isDirectory()) {
    const p = path.join(from, wf.name);
    if (fs.existsSync(p)) return p;
    if (wf.name === 'model.safetensors' && fs.existsSync(path.join(from, 'pytorch_model.bin'))) return undefined;
    if (wf.optional) return undefined;
    throw new UsageError(`--from ${from}: the folder has no ${wf.name}`);
  }
  if (isPyTorchPath(from) || path.basename(from) === wf.name || from.endsWith('.safetensors')) return from;
  throw new UsageError(`--from ${from}: expected ${wf.name}`);
}

async function download(url: string, dest: string, fetchImpl: typeof fetch, log: (l: string) => void): Promise<void> {
  const res = await fetchImpl(url, { redirect: 'follow', signal: AbortSignal.timeout(60_000) }).catch((e: unknown) => {
    const cause = (e as { cause?: { message?: string; code?: string } }).cause;
    throw new Error(cause?.code ?? cause?.message ?? (e as Error).message);
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length') ?? 0);
  const part = `${dest}.part`;
  const out = fs.createWriteStream(part);
  let got = 0;
  let lastLog = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    got += chunk.length;
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    if (Date.now() - lastLog > 2000) {
      lastLog = Date.now();
      log(`  ${path.basename(dest)}: ${(got / 2 ** 20).toFixed(1)}${total ? ` / ${(total / 2 ** 20).toFixed(1)}` : ''} MiB`);
    }
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
  if (total && got !== total) throw new Error(`download stopped at ${got} of ${total} bytes`);
  fs.renameSync(part, dest);
}

export interface WeightStatus {
  id: string;
  describe: string;
  present: boolean;
  path: string;
  files: { name: string; present: boolean; sha256?: string; bytes?: number }[];
}

export function listWeights(cacheDir = weightsCacheDir()): WeightStatus[] {
  return SETS.map((set) => {
    const dir = path.join(cacheDir, set.id);
    let manifest: Manifest | undefined;
    try {
      manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    } catch {
      manifest = undefined;
    }
    const names = [...set.files.filter((f) => !f.optional).map((f) => f.convertTo ?? f.name)];
    const files = names.map((name) => {
      const p = path.join(dir, name);
      const m = manifest?.files[name];
      return { name, present: fs.existsSync(p), ...(m ? { sha256: m.sha256, bytes: m.bytes } : {}) };
    });
    return { id: set.id, describe: set.describe, present: files.every((f) => f.present), path: path.join(dir, set.entry), files };
  });
}

export interface ResolvedWeights {
  id: string;
  path: string;
  /** sha256 of the main weights file, for the report's settings. */
  sha256: string;
}

/**
 * The local path of a weight set, or a usage error saying how to get it. `explicit` is a path the
 * user configured (a .safetensors, a .pth converted on the fly is not done here: convert once with fetch --from).
 */
export function resolveWeights(id: string, opts: { explicit?: string; cacheDir?: string } = {}): ResolvedWeights {
  const set = getWeightSet(id);
  if (opts.explicit) {
    if (!fs.existsSync(opts.explicit)) throw new UsageError(`weights for ${id}: ${opts.explicit} does not exist`);
    return { id, path: opts.explicit, sha256: manifestHash(opts.explicit) ?? hashSync(mainFile(opts.explicit)) };
  }
  const status = listWeights(opts.cacheDir).find((s) => s.id === id)!;
  if (!status.present) {
    const missing = status.files.filter((f) => !f.present).map((f) => f.name);
    throw new UsageError(
      `${set.describe} weights are not in ${path.join(opts.cacheDir ?? weightsCacheDir(), id)} (missing ${missing.join(', ')}).\n` +
        `Get them with: scaleforge weights fetch ${id}\n` +
        `(without internet: download ${set.files[0]!.url}${set.files.length > 1 ? ' and the other files listed by `scaleforge weights list`' : ''} by hand, then scaleforge weights fetch ${id} --from PATH)`,
    );
  }
  const main = mainFile(status.path);
  const sha = status.files.find((f) => path.join(path.dirname(status.path), f.name) === main || f.name === path.basename(main))?.sha256;
  return { id, path: status.path, sha256: sha ?? hashSync(main) };
}

function mainFile(p: string): string {
  return fs.statSync(p).isDirectory() ? path.join(p, 'model.safetensors') : p;
}

function manifestHash(p: string): string | undefined {
  try {
    const dir = fs.statSync(p).isDirectory() ? p : path.dirname(p);
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    return m.files[path.basename(mainFile(p))]?.sha256;
  } catch {
    return undefined;
  }
}

function hashSync(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/**
 * A weights file checked against the names and shapes a network expects, before loading: every
 * mismatch names the tensor and both shapes; missing and unexpected names are listed.
 */
export function checkWeightShapes(file: string, expected: ReadonlyMap<string, readonly number[]>): void {
  const h = readSafetensorsHeader(file);
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const t = h.tensors[name];
    if (!t) problems.push(`missing tensor '${name}' (expected shape [${shape.join(', ')}])`);
    else if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
      problems.push(`tensor '${name}' has shape [${t.shape.join(', ')}], the network expects [${shape.join(', ')}]`);
    }
  }
  const unexpected = Object.keys(h.tensors).filter((n) => !expected.has(n) && !n.endsWith('num_batches_tracked'));
  if (unexpected.length) problems.push(`unexpected tensors: ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? `, … (${unexpected.length})` : ''}`);
  if (problems.length) {
    throw new UsageError(`${file}: not the weights this network expects:\n  ${problems.slice(0, 12).join('\n  ')}${problems.length > 12 ? `\n  … ${problems.length - 12} more` : ''}`);
  }
}
