import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument, isAlias, isMap, isScalar, isSeq, isPair, type Document, type Node as YamlNode } from 'yaml';
import { UsageError } from '../util/errors.js';

/**
 * A config value together with where each piece came from, so that an error found after merging base configs,
 * the recipe and `--set` overrides can still point at the line a person has to edit.
 */
export type Origin = { file: string; line: number; col: number } | { set: string };

export type ScalarValue = string | number | boolean | null;

export interface MapEntry {
  keyOrigin: Origin;
  value: ConfigNode;
}
export interface MapNode {
  type: 'map';
  entries: Map<string, MapEntry>;
  origin: Origin;
}
export interface SeqNode {
  type: 'seq';
  items: ConfigNode[];
  origin: Origin;
}
export interface ScalarNode {
  type: 'scalar';
  value: ScalarValue;
  origin: Origin;
}
export type ConfigNode = MapNode | SeqNode | ScalarNode;

/** Paths are shown relative to the working directory when they lie inside it, as a person would type them. */
export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

export function formatOrigin(o: Origin): string {
  return 'set' in o ? `--set ${o.set}` : `${displayPath(o.file)}:${o.line}:${o.col}`;
}

export function fileStart(file: string): Origin {
  return { file, line: 1, col: 1 };
}

/**
 * Limits that keep a hostile or broken config from exhausting memory or the stack before it can be reported:
 * recipes are hand-written files of a few KiB, so these are far above any real one.
 */
export const CONFIG_LIMITS = {
  /** Bytes of one config file or `--set` value. */
  maxBytes: 1 << 20,
  /** Nesting of mappings and lists (flow or block). */
  maxDepth: 64,
  /** Values after expanding aliases; a "billion laughs" file multiplies a few lines into billions. */
  maxNodes: 100_000,
  /** Alias uses expanded (each `*name` counts every time it is reached through other aliases). */
  maxAliasExpansions: 1_000,
} as const;

/** Reads a YAML file into a positioned tree. The top level must be a mapping (an empty file is an empty one). */
export function readConfigFile(file: string): MapNode {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > CONFIG_LIMITS.maxBytes) {
      throw new UsageError(`${displayPath(file)}: ${size} bytes is too large for a config file (limit ${CONFIG_LIMITS.maxBytes} bytes)`);
    }
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`${displayPath(file)}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const tree = parseYamlText(text, (lc, offset) => {
    const { line, col } = lc.linePos(offset);
    return { file, line, col };
  });
  if (tree === undefined) return { type: 'map', entries: new Map(), origin: fileStart(file) };
  if (tree.type !== 'map') {
    throw new UsageError(`${formatOrigin(tree.origin)}: expected a mapping of keys at the top of the file, found a ${describeNode(tree)}`);
  }
  return tree;
}

/** Parses the value half of `--set key=value` as YAML (scalars and flow collections such as `[16,32]`). */
export function parseSetValue(text: string, setPath: string): ConfigNode {
  const tree = parseYamlText(text, () => ({ set: setPath }), `--set ${setPath}`);
  return tree ?? { type: 'scalar', value: null, origin: { set: setPath } };
}

type OriginAt = (lc: LineCounter, offset: number) => Origin;

function parseYamlText(text: string, originAt: OriginAt, label?: string): ConfigNode | undefined {
  const lineCounter = new LineCounter();
  if (text.length > CONFIG_LIMITS.maxBytes) {
    throw new UsageError(`${label ?? 'config'}: ${text.length} characters is too large (limit ${CONFIG_LIMITS.maxBytes})`);
  }
  const scan = preScan(text, CONFIG_LIMITS.maxDepth);
  if (scan.tooDeepAt !== undefined) {
    const where = label ?? formatOrigin(originAt(lineCounterFor(text), scan.tooDeepAt));
    throw new UsageError(`${where}: lists/mappings nested more than ${CONFIG_LIMITS.maxDepth} deep`);
  }
  if (scan.separators > CONFIG_LIMITS.maxNodes) {
    throw new UsageError(`${label ?? formatOrigin(originAt(lineCounterFor(text), 0))}: expands to more than ${CONFIG_LIMITS.maxNodes} values (too many for a config)`);
  }
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // The first few are what a person fixes first; one stray bracket can make the parser report every later line.
    const shown = 5;
    const lines = doc.errors.slice(0, shown).map((err) => {
      const where = label ?? formatOrigin(originAt(lineCounter, err.pos[0]));
      return `${where}: invalid YAML: ${err.message.split('\n')[0]!.slice(0, 300)}`;
    });
    if (doc.errors.length > shown) lines.push(`… and ${doc.errors.length - shown} more YAML errors after these`);
    throw new UsageError(lines.join('\n'));
  }
  if (doc.contents === null) return undefined;
  const walk: Walk = { doc, lc: lineCounter, originAt, nodes: 0, aliases: 0, aliasStack: [] };
  return convert(walk, doc.contents as YamlNode, 0);
}

/** A LineCounter filled for `text`, for positions found before the parser ran. */
function lineCounterFor(text: string): LineCounter {
  const lc = new LineCounter();
  lc.addNewLine(0);
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lc.addNewLine(i + 1);
  return lc;
}

/**
 * Checked before parsing, because the YAML parser recurses per level and takes seconds on deep or huge input:
 * the offset of the first flow bracket (`[`, `{`) opened deeper than `max` outside quotes and comments, and the
 * number of commas and line breaks there (an upper bound on the values a file without aliases can hold).
 */
function preScan(text: string, max: number): { tooDeepAt: number | undefined; separators: number } {
  let depth = 0;
  let quote = '';
  let separators = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = '';
      else if (c === '\n' && depth === 0) quote = '';
      continue;
    }
    if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]!))) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl - 1;
    } else if (c === '[' || c === '{') {
      if (++depth > max) return { tooDeepAt: i, separators };
    } else if ((c === ']' || c === '}') && depth > 0) depth--;
    else if (c === ',' || c === '\n') separators++;
  }
  return { tooDeepAt: undefined, separators };
}

interface Walk {
  doc: Document;
  lc: LineCounter;
  originAt: OriginAt;
  /** Values produced so far, aliases counted each time they are expanded. */
  nodes: number;
  aliases: number;
  /** Anchored nodes being expanded through aliases, to catch an alias inside its own anchor. */
  aliasStack: YamlNode[];
}

function convert(w: Walk, node: YamlNode, depth: number): ConfigNode {
  const { doc, lc, originAt } = w;
  const origin = originAt(lc, node.range?.[0] ?? 0);
  if (++w.nodes > CONFIG_LIMITS.maxNodes) {
    throw new UsageError(
      `${formatOrigin(origin)}: expands to more than ${CONFIG_LIMITS.maxNodes} values (aliases that repeat aliases? refused as a resource bomb)`,
    );
  }
  if (depth > CONFIG_LIMITS.maxDepth) throw new UsageError(`${formatOrigin(origin)}: lists/mappings nested more than ${CONFIG_LIMITS.maxDepth} deep`);
  if (isAlias(node)) {
    const target = node.resolve(doc) as YamlNode | undefined;
    if (target === undefined) throw new UsageError(`${formatOrigin(origin)}: unresolved alias *${node.source}`);
    if (w.aliasStack.includes(target)) throw new UsageError(`${formatOrigin(origin)}: alias *${node.source} refers to a value that contains it`);
    if (++w.aliases > CONFIG_LIMITS.maxAliasExpansions) {
      throw new UsageError(
        `${formatOrigin(origin)}: more than ${CONFIG_LIMITS.maxAliasExpansions} alias expansions (aliases that repeat aliases? refused as a resource bomb)`,
      );
    }
    w.aliasStack.push(target);
    const resolved = convert(w, target, depth);
    w.aliasStack.pop();
    return { ...resolved, origin };
  }
  if (isMap(node)) {
    const entries = new Map<string, MapEntry>();
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const keyNode = pair.key as YamlNode | null;
      const keyOrigin = keyNode ? originAt(lc, keyNode.range?.[0] ?? 0) : origin;
      if (!keyNode || !isScalar(keyNode) || (keyNode.value !== null && typeof keyNode.value === 'object')) {
        throw new UsageError(`${formatOrigin(keyOrigin)}: keys must be plain names, not collections`);
      }
      const key = String(keyNode.value);
      const value: ConfigNode =
        pair.value === null
          ? { type: 'scalar', value: null, origin: keyOrigin }
          : convert(w, pair.value as YamlNode, depth + 1);
      entries.set(key, { keyOrigin, value });
    }
    return { type: 'map', entries, origin };
  }
  if (isSeq(node)) {
    return { type: 'seq', items: node.items.map((item) => convert(w, item as YamlNode, depth + 1)), origin };
  }
  if (isScalar(node)) {
    const v = node.value;
    if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      return { type: 'scalar', value: v, origin };
    }
    throw new UsageError(`${formatOrigin(origin)}: unsupported YAML value (tag ${node.tag ?? typeof v}); use a number, string, boolean, list or mapping`);
  }
  throw new UsageError(`${formatOrigin(origin)}: unsupported YAML node`);
}

export function describeNode(n: ConfigNode): string {
  if (n.type === 'map') return 'mapping';
  if (n.type === 'seq') return 'list';
  return n.value === null ? 'null' : `${typeof n.value} ${JSON.stringify(n.value)}`;
}

/** The plain JS value a schema validates. */
export function toPlain(n: ConfigNode): unknown {
  if (n.type === 'scalar') return n.value;
  if (n.type === 'seq') return n.items.map(toPlain);
  const out: Record<string, unknown> = {};
  // defineProperty, not assignment: a key named `__proto__` must stay a key (and reach the schema's unknown-key check).
  for (const [k, e] of n.entries) Object.defineProperty(out, k, { value: toPlain(e.value), enumerable: true, writable: true, configurable: true });
  return out;
}

/**
 * The best origin for a path into the tree: the key's own line when the path exists, else the deepest existing
 * ancestor (so "missing key" errors point at the section that lacks it). `found` tells which case applied.
 */
export function originOfPath(root: MapNode, pathKeys: readonly PropertyKey[]): { origin: Origin; found: boolean } {
  let node: ConfigNode = root;
  let origin: Origin = root.origin;
  for (const seg of pathKeys) {
    if (node.type === 'map') {
      const e = node.entries.get(String(seg));
      if (!e) return { origin, found: false };
      origin = e.keyOrigin;
      node = e.value;
    } else if (node.type === 'seq') {
      const item: ConfigNode | undefined = typeof seg === 'number' ? node.items[seg] : undefined;
      if (!item) return { origin, found: false };
      origin = item.origin;
      node = item;
    } else {
      return { origin, found: false };
    }
  }
  return { origin, found: true };
}
