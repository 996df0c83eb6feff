import type { z } from 'zod';
import { formatOrigin, originOfPath, type MapNode } from './config_tree.js';
import { didYouMean } from './suggest.js';

/**
 * Turns zod's validation issues into one line each, `file:line:col: dotted.key: what was expected, got what`,
 * naming the file (base config, recipe, or `--set`) that defined the offending key.
 */
export function formatIssues(schema: z.ZodType, issues: readonly z.core.$ZodIssue[], tree: MapNode, input: unknown): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    for (const line of formatIssue(schema, issue, tree, input)) if (!lines.includes(line)) lines.push(line);
  }
  return lines;
}

function formatIssue(schema: z.ZodType, issue: z.core.$ZodIssue, tree: MapNode, input: unknown): string[] {
  const where = (p: readonly PropertyKey[]) => formatOrigin(originOfPath(tree, p).origin);
  if (issue.code === 'unrecognized_keys') {
    const allowed = [...new Set(schemasAt(schema, issue.path).flatMap(objectKeys))];
    return issue.keys.map((key) => {
      const p = [...issue.path, key];
      const hint = didYouMean(key, allowed) || (allowed.length > 0 ? ` (allowed here: ${allowed.join(', ')})` : '');
      return `${where(p)}: ${dotted(p)}: unknown key${hint}`;
    });
  }
  const value = valueAt(input, issue.path);
  const subs = schemasAt(schema, issue.path);
  const expected = subs.length > 0 ? [...new Set(subs.map(describeSchema))].join(' or ') : undefined;
  const head = `${where(issue.path)}: ${dotted(issue.path)}`;
  if (value.missing) return [`${head}: missing${expected ? ` (expected ${expected})` : ''}`];
  switch (issue.code) {
    case 'invalid_type':
    case 'too_small':
    case 'too_big':
    case 'not_multiple_of':
    case 'invalid_format':
    case 'invalid_union':
    case 'invalid_value': {
      const hint = typeof value.value === 'string' ? didYouMean(value.value, constantsOf(subs)) : '';
      return [`${head}: expected ${expected ?? issue.message}, got ${render(value.value)}${hint}`];
    }
    default:
      return [`${head}: ${issue.message}`];
  }
}

/** `model.scales[2].size`, or `(top level)` for the root. */
export function dotted(p: readonly PropertyKey[]): string {
  if (p.length === 0) return '(top level)';
  let s = '';
  for (const seg of p) s += typeof seg === 'number' ? `[${seg}]` : s === '' ? String(seg) : `.${String(seg)}`;
  return s;
}

function valueAt(input: unknown, p: readonly PropertyKey[]): { missing: boolean; value: unknown } {
  let v = input;
  for (const seg of p) {
    if (v === null || typeof v !== 'object' || !Object.prototype.hasOwnProperty.call(v, seg)) return { missing: true, value: undefined };
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return { missing: false, value: v };
}

function render(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = typeof v === 'string' ? JSON.stringify(v) : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

// zod 4 exposes its schema structure through `_zod.def`; only the fields read below are relied on.
interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  getter?: () => z.ZodType;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  items?: z.ZodType[];
  rest?: z.ZodType | null;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  entries?: Record<string, string | number>;
  values?: unknown[];
  checks?: { _zod: { def: CheckDef } }[];
  format?: string;
  check?: string;
}
interface CheckDef {
  check: string;
  value?: number | bigint;
  inclusive?: boolean;
  format?: string;
  minimum?: number;
  maximum?: number;
}

const def = (s: z.ZodType): Def => (s as unknown as { _zod: { def: Def } })._zod.def;
const WRAPPERS = new Set(['default', 'optional', 'nullable', 'prefault', 'readonly', 'catch', 'nonoptional']);

function unwrap(s: z.ZodType): z.ZodType {
  for (let i = 0; i < 50; i++) {
    const d = def(s);
    if (WRAPPERS.has(d.type) && d.innerType) s = d.innerType;
    else if (d.type === 'pipe' && d.in) s = d.in;
    else if (d.type === 'lazy' && d.getter) s = d.getter();
    else break;
  }
  return s;
}

/**
 * The sub-schemas that may validate the value at a path: one normally, several below a union (each option that
 * has the path), none when the path leaves the schema.
 */
export function schemasAt(schema: z.ZodType, p: readonly PropertyKey[]): z.ZodType[] {
  let current: z.ZodType[] = [schema];
  for (const seg of p) {
    const next: z.ZodType[] = [];
    const visit = (s: z.ZodType): void => {
      const d = def(unwrap(s));
      let child: z.ZodType | null | undefined;
      if (d.type === 'object') child = d.shape?.[String(seg)];
      else if (d.type === 'array') child = d.element;
      else if (d.type === 'tuple') child = (typeof seg === 'number' ? d.items?.[seg] : undefined) ?? d.rest;
      else if (d.type === 'record') child = d.valueType;
      else if (d.type === 'union') for (const o of d.options ?? []) visit(o);
      if (child) next.push(child);
    };
    current.forEach(visit);
    current = next;
  }
  return current;
}

export function schemaAt(schema: z.ZodType, p: readonly PropertyKey[]): z.ZodType | undefined {
  return schemasAt(schema, p)[0];
}

/** The constant values (enum members, literals) a set of schemas accepts, for did-you-mean on strings. */
function constantsOf(schemas: readonly z.ZodType[]): string[] {
  const out: string[] = [];
  const visit = (s: z.ZodType): void => {
    const d = def(unwrap(s));
    if (d.type === 'enum') out.push(...Object.values(d.entries ?? {}).map(String));
    else if (d.type === 'literal') out.push(...(d.values ?? []).map(String));
    else if (d.type === 'union') (d.options ?? []).forEach(visit);
  };
  schemas.forEach(visit);
  return [...new Set(out)];
}

function objectKeys(s: z.ZodType): string[] {
  const d = def(unwrap(s));
  if (d.type === 'object') return Object.keys(d.shape ?? {});
  if (d.type === 'union') return [...new Set((d.options ?? []).flatMap(objectKeys))];
  return [];
}

const quote = (v: unknown) => (typeof v === 'string' ? `'${v}'` : String(v));

/** Plain-words description of what a schema accepts, preferring the author's own `.describe()` text. */
export function describeSchema(s: z.ZodType): string {
  const own = (s as { description?: string }).description;
  if (own) return own;
  const d = def(s);
  if (WRAPPERS.has(d.type) || d.type === 'pipe' || d.type === 'lazy') {
    const inner = d.type === 'pipe' ? d.in : d.type === 'lazy' ? d.getter?.() : d.innerType;
    return inner ? describeSchema(inner) : 'a value';
  }
  switch (d.type) {
    case 'number':
      return describeNumber(d);
    case 'bigint':
      return 'an integer';
    case 'string':
      return describeLength('a string', d, 'character');
    case 'boolean':
      return 'true or false';
    case 'enum':
      return `one of ${Object.values(d.entries ?? {}).map(quote).join(', ')}`;
    case 'literal':
      return (d.values ?? []).map(quote).join(' or ');
    case 'array':
      return describeLength(`a list${d.element ? ` (each ${describeSchema(d.element)})` : ''}`, d, 'item');
    case 'tuple':
      return `a list of ${d.items?.length ?? 0} values [${(d.items ?? []).map(describeSchema).join(', ')}]`;
    case 'object':
    case 'record':
      return 'a mapping';
    case 'union':
      return [...new Set((d.options ?? []).map(describeSchema))].join(' or ');
    case 'null':
      return 'null';
    default:
      return `a value of type ${d.type}`;
  }
}

function describeNumber(d: Def): string {
  let isInt = d.format === 'safeint' || d.format === 'int32' || d.format === 'uint32';
  let lo: { v: number; inc: boolean } | undefined;
  let hi: { v: number; inc: boolean } | undefined;
  let multipleOf: number | undefined;
  for (const c of d.checks ?? []) {
    const cd = c._zod.def;
    if (cd.check === 'number_format' && cd.format && /int/.test(cd.format)) isInt = true;
    else if (cd.check === 'greater_than') lo = { v: Number(cd.value), inc: cd.inclusive === true };
    else if (cd.check === 'less_than') hi = { v: Number(cd.value), inc: cd.inclusive === true };
    else if (cd.check === 'multiple_of') multipleOf = Number(cd.value);
  }
  const noun = isInt ? 'integer' : 'number';
  let text: string;
  if (lo && lo.v === 0 && !hi) text = lo.inc ? `a non-negative ${noun}` : `a positive ${noun}`;
  else if (lo && isInt && lo.inc && !hi) text = `an integer >= ${lo.v}`;
  else {
    text = isInt ? 'an integer' : 'a number';
    const parts: string[] = [];
    if (lo) parts.push(`${lo.inc ? '>=' : '>'} ${lo.v}`);
    if (hi) parts.push(`${hi.inc ? '<=' : '<'} ${hi.v}`);
    if (parts.length > 0) text += ` ${parts.join(' and ')}`;
  }
  if (multipleOf !== undefined) text += ` (a multiple of ${multipleOf})`;
  return text;
}

function describeLength(base: string, d: Def, unit: string): string {
  let min: number | undefined;
  let max: number | undefined;
  for (const c of d.checks ?? []) {
    const cd = c._zod.def;
    if (cd.check === 'min_length') min = cd.minimum;
    else if (cd.check === 'max_length') max = cd.maximum;
    else if (cd.check === 'length_equals') min = max = (cd as { length?: number }).length;
  }
  const plural = (n: number) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  if (min !== undefined && min === max) return `${base} of exactly ${plural(min)}`;
  if (min === 1 && max === undefined) return `a non-empty ${base.replace(/^an? /, '')}`;
  const parts: string[] = [];
  if (min !== undefined) parts.push(`at least ${plural(min)}`);
  if (max !== undefined) parts.push(`at most ${plural(max)}`);
  return parts.length > 0 ? `${base} with ${parts.join(' and ')}` : base;
}
