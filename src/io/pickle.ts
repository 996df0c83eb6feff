import { JobError } from '../util/errors.js';

/**
 * A safe unpickler: it reads pickle protocols 0–5 into plain JS values and never resolves a
 * Python global it was not given. Where Python's `pickle.load` would import `module.name` and
 * call it, this one looks the name up in an allow-list of handlers written in TypeScript; any
 * other global is refused at the GLOBAL/STACK_GLOBAL opcode, before anything could call it, with
 * a message naming it. Resource limits (memo size, stack size, mark nesting, claimed lengths,
 * big integers) are checked before allocating.
 *
 * Values: None → null, bool → boolean, int → number (bigint past 2^53), float → number,
 * str → string, bytes/bytearray → Uint8Array, list → array, tuple → PyTuple, dict → Map,
 * set/frozenset → Set, anything a handler builds → what it returns.
 */

export class PickleError extends JobError {
  override readonly name = 'PickleError' as 'JobError';
}

/** An immutable Python tuple (kept apart from lists so callers can tell them apart). */
export class PyTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** What a pickled global resolves to: a TypeScript stand-in for the Python callable or class. */
export interface GlobalHandler {
  /** `REDUCE`/`INST`/`OBJ`: call the global with positional arguments. */
  call?: (args: readonly unknown[]) => unknown;
  /** `NEWOBJ`/`NEWOBJ_EX`: `cls.__new__(cls, *args)`; defaults to `call`. */
  newObject?: (args: readonly unknown[]) => unknown;
  /** `BUILD` on an object this handler made: apply `__setstate__`-style state. */
  build?: (obj: unknown, state: unknown) => unknown;
}

/** A resolved, allow-listed global sitting on the stack. */
export class PyGlobal {
  constructor(
    readonly qualifiedName: string,
    readonly handler: GlobalHandler,
  ) {}
}

export interface UnpickleLimits {
  /** Most memo entries. */
  maxMemo: number;
  /** Most values on the stack at once. */
  maxStack: number;
  /** Most nested MARKs (nesting depth of containers being built). */
  maxMarkDepth: number;
  /** Longest integer in bytes (LONG1/LONG4/decimal LONG). */
  maxIntBytes: number;
}

export const DEFAULT_UNPICKLE_LIMITS: UnpickleLimits = { maxMemo: 1_000_000, maxStack: 1_000_000, maxMarkDepth: 1000, maxIntBytes: 256 };

export interface UnpickleOptions {
  /** `module.name` → handler. `__builtin__`/`copy_reg` are read under their Python 3 names. */
  globals: ReadonlyMap<string, GlobalHandler>;
  /** PERSID/BINPERSID: PyTorch's storage references. Without it, persistent ids are refused. */
  persistentLoad?: (pid: unknown) => unknown;
  limits?: Partial<UnpickleLimits>;
  /** Named in error messages. */
  source?: string;
}

/** Python 2 module names that Python 3's unpickler maps to their new homes (fix_imports). */
const PY2_MODULES: Record<string, string> = { __builtin__: 'builtins', copy_reg: 'copyreg' };

/** Attributes set by BUILD on dicts (e.g. a state dict's `_metadata`), kept beside the Map. */
export const pyAttributes = new WeakMap<object, Map<string, unknown>>();


export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  return new Unpickler(data, opts, 0).load();
}

/** One pickle starting at `offset` of a stream of several (PyTorch's legacy format); `end` is where the next starts. */
export function unpickleAt(data: Uint8Array, offset: number, opts: UnpickleOptions): { value: unknown; end: number } {
  const u = new Unpickler(data, opts, offset);
  const value = u.load();
  return { value, end: u.position };
}

class Unpickler {
  private pos = 0;
  private stack: unknown[] = [];
  private readonly marks: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private readonly view: DataView;
  private readonly limits: UnpickleLimits;
  private readonly source: string;

  constructor(
    private readonly data: Uint8Array,
    private readonly opts: UnpickleOptions,
    start: number,
  ) {
    this.pos = start;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.limits = { ...DEFAULT_UNPICKLE_LIMITS, ...opts.limits };
    this.source = opts.source ?? 'pickle';
  }

  get position(): number {
    return this.pos;
  }

  private fail(msg: string): PickleError {
    return new PickleError(`${this.source}: ${msg} (at byte ${this.pos})`);
  }

  private need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.data.length) {
      throw this.fail(`${what} claims ${n} bytes but only ${this.data.length - this.pos} remain`);
    }
  }

  private bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const b = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  private u8(): number {
    this.need(1, 'opcode argument');
    return this.data[this.pos++]!;
  }
  private u16(): number {
    this.need(2, 'opcode argument');
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  private u32(): number {
    this.need(4, 'opcode argument');
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  private i32(): number {
    this.need(4, 'opcode argument');
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  private u64(): number {
    this.need(8, 'opcode argument');
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`length ${v} is absurd`);
    return Number(v);
  }
  private line(): string {
    const end = this.data.indexOf(0x0a, this.pos);
    if (end < 0) throw this.fail('text argument without a terminating newline');
    const s = Buffer.from(this.data.subarray(this.pos, end)).toString('latin1');
    this.pos = end + 1;
    return s;
  }

  private push(v: unknown): void {
    if (this.stack.length >= this.limits.maxStack) throw this.fail(`stack exceeds ${this.limits.maxStack} items`);
    this.stack.push(v);
  }
  private pop(): unknown {
    if (this.stack.length === 0) throw this.fail('stack underflow (malformed pickle)');
    return this.stack.pop();
  }
  private top(): unknown {
    if (this.stack.length === 0) throw this.fail('stack underflow (malformed pickle)');
    return this.stack[this.stack.length - 1];
  }
  private mark(): void {
    if (this.marks.length >= this.limits.maxMarkDepth) throw this.fail(`nesting deeper than ${this.limits.maxMarkDepth} levels`);
    this.marks.push(this.stack);
    this.stack = [];
  }
  private popMark(): unknown[] {
    const items = this.stack;
    const prev = this.marks.pop();
    if (!prev) throw this.fail('no MARK to pop to (malformed pickle)');
    this.stack = prev;
    return items;
  }
  private memoPut(i: number, v: unknown): void {
    if (!this.memo.has(i) && this.memo.size >= this.limits.maxMemo) throw this.fail(`memo exceeds ${this.limits.maxMemo} entries`);
    this.memo.set(i, v);
  }
  private memoGet(i: number): unknown {
    if (!this.memo.has(i)) throw this.fail(`memo key ${i} was never stored`);
    return this.memo.get(i);
  }

  private resolveGlobal(module: string, name: string): PyGlobal {
    const written = `${module}.${name}`;
    const qualified = `${PY2_MODULES[module] ?? module}.${name}`;
    const handler = this.opts.globals.get(qualified);
    if (!handler) {
      throw new PickleError(
        `${this.source}: refusing to load global '${written}': it is not on the allow-list of what a weights file needs ` +
          '(a pickle can run arbitrary code through such globals; nothing was executed)',
      );
    }
    return new PyGlobal(qualified, handler);
  }

  private call(fn: unknown, args: readonly unknown[], how: 'call' | 'new'): unknown {
    if (!(fn instanceof PyGlobal)) throw this.fail(`cannot call a ${describe(fn)} (only allow-listed globals are callable)`);
    const h = fn.handler;
    const f = how === 'new' ? (h.newObject ?? h.call) : h.call;
    if (!f) throw this.fail(`'${fn.qualifiedName}' is allow-listed as a value, not as something to call`);
    try {
      return f(args);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      throw this.fail(`${fn.qualifiedName}: ${(e as Error).message}`);
    }
  }

  private int(bytes: Uint8Array): number | bigint {
    if (bytes.length > this.limits.maxIntBytes) throw this.fail(`integer of ${bytes.length} bytes exceeds the ${this.limits.maxIntBytes}-byte limit`);
    if (bytes.length === 0) return 0;
    let v = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
    if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
    return narrow(v);
  }

  load(): unknown {
    const d = this.data;
    while (this.pos < d.length) {
      const op = d[this.pos++]!;
      switch (op) {
        case 0x80: {
          const proto = this.u8();
          if (proto > 5) throw this.fail(`unsupported pickle protocol ${proto} (0–5 are known)`);
          break;
        }
        case 0x95: // FRAME: a length hint; the framed bytes follow inline.
          this.need(this.u64(), 'FRAME');
          break;
        case 0x2e: // STOP
          if (this.marks.length) throw this.fail('STOP inside an unclosed MARK');
          return this.pop();
        case 0x28: // MARK
          this.mark();
          break;
        case 0x30: // POP
          if (this.stack.length) this.stack.pop();
          else this.popMark();
          break;
        case 0x31: // POP_MARK
          this.popMark();
          break;
        case 0x32: // DUP
          this.push(this.top());
          break;
        case 0x4e: // NONE
          this.push(null);
          break;
        case 0x88:
          this.push(true);
          break;
        case 0x89:
          this.push(false);
          break;
        case 0x49: {
          // INT (text); protocol 0 writes bools as 01/00.
          const s = this.line();
          if (s === '01') this.push(true);
          else if (s === '00') this.push(false);
          else this.push(this.decimal(s));
          break;
        }
        case 0x4a:
          this.push(this.i32());
          break;
        case 0x4b:
          this.push(this.u8());
          break;
        case 0x4d:
          this.push(this.u16());
          break;
        case 0x4c: // LONG (text)
          this.push(this.decimal(this.line().replace(/L$/, '')));
          break;
        case 0x8a:
          this.push(this.int(this.bytes(this.u8(), 'LONG1')));
          break;
        case 0x8b: {
          const n = this.i32();
          if (n < 0) throw this.fail('LONG4 with a negative length');
          if (n > this.limits.maxIntBytes) throw this.fail(`integer of ${n} bytes exceeds the ${this.limits.maxIntBytes}-byte limit`);
          this.push(this.int(this.bytes(n, 'LONG4')));
          break;
        }
        case 0x46: {
          const v = Number(this.line());
          this.push(v);
          break;
        }
        case 0x47: {
          this.need(8, 'BINFLOAT');
          this.push(this.view.getFloat64(this.pos, false));
          this.pos += 8;
          break;
        }
        case 0x53: // STRING (protocol 0 repr)
          this.push(pyStringLiteral(this.line(), (m) => this.fail(m)));
          break;
        case 0x54: {
          const n = this.i32();
          if (n < 0) throw this.fail('BINSTRING with a negative length');
          this.push(Buffer.from(this.bytes(n, 'BINSTRING')).toString('latin1'));
          break;
        }
        case 0x55:
          this.push(Buffer.from(this.bytes(this.u8(), 'SHORT_BINSTRING')).toString('latin1'));
          break;
        case 0x56: // UNICODE (raw-unicode-escape)
          this.push(this.line().replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_, a: string, b: string) => String.fromCodePoint(parseInt(a ?? b, 16))));
          break;
        case 0x58:
          this.push(utf8(this.bytes(this.u32(), 'BINUNICODE')));
          break;
        case 0x8c:
          this.push(utf8(this.bytes(this.u8(), 'SHORT_BINUNICODE')));
          break;
        case 0x8d:
          this.push(utf8(this.bytes(this.u64(), 'BINUNICODE8')));
          break;
        case 0x42:
          this.push(this.bytes(this.u32(), 'BINBYTES').slice());
          break;
        case 0x43:
          this.push(this.bytes(this.u8(), 'SHORT_BINBYTES').slice());
          break;
        case 0x8e:
          this.push(this.bytes(this.u64(), 'BINBYTES8').slice());
          break;
        case 0x96:
          this.push(this.bytes(this.u64(), 'BYTEARRAY8').slice());
          break;
        case 0x5d: // EMPTY_LIST
          this.push([]);
          break;
        case 0x6c: // LIST
          this.push(this.popMark());
          break;
        case 0x61: {
          const v = this.pop();
          this.asList(this.top(), 'APPEND').push(v);
          break;
        }
        case 0x65: {
          const items = this.popMark();
          this.asList(this.top(), 'APPENDS').push(...items);
          break;
        }
        case 0x29:
          this.push(new PyTuple([]));
          break;
        case 0x74:
          this.push(new PyTuple(this.popMark()));
          break;
        case 0x85:
          this.push(new PyTuple([this.pop()]));
          break;
        case 0x86: {
          const b = this.pop();
          const a = this.pop();
          this.push(new PyTuple([a, b]));
          break;
        }
        case 0x87: {
          const c = this.pop();
          const b = this.pop();
          const a = this.pop();
          this.push(new PyTuple([a, b, c]));
          break;
        }
        case 0x7d:
          this.push(new Map());
          break;
        case 0x64: {
          const items = this.popMark();
          this.push(this.fillDict(new Map(), items));
          break;
        }
        case 0x73: {
          const v = this.pop();
          const k = this.pop();
          this.asDict(this.top(), 'SETITEM').set(hashKey(k, (m) => this.fail(m)), v);
          break;
        }
        case 0x75: {
          const items = this.popMark();
          this.fillDict(this.asDict(this.top(), 'SETITEMS'), items);
          break;
        }
        case 0x8f:
          this.push(new Set());
          break;
        case 0x90: {
          const items = this.popMark();
          const s = this.top();
          if (!(s instanceof Set)) throw this.fail(`ADDITEMS on a ${describe(s)}`);
          for (const it of items) s.add(hashKey(it, (m) => this.fail(m)));
          break;
        }
        case 0x91:
          this.push(new Set(this.popMark().map((it) => hashKey(it, (m) => this.fail(m)))));
          break;
        case 0x63: {
          // GLOBAL: module and name as text lines.
          const module = this.line();
          const name = this.line();
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x93: {
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') throw this.fail('STACK_GLOBAL needs two strings');
          this.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x52: {
          const args = this.pop();
          const fn = this.pop();
          if (!(args instanceof PyTuple)) throw this.fail(`REDUCE arguments must be a tuple, got ${describe(args)}`);
          this.push(this.call(fn, args.items, 'call'));
          break;
        }
        case 0x69: {
          // INST: class named inline, arguments since the mark.
          const module = this.line();
          const name = this.line();
          const cls = this.resolveGlobal(module, name);
          this.push(this.call(cls, this.popMark(), 'call'));
          break;
        }
        case 0x6f: {
          const items = this.popMark();
          if (items.length === 0) throw this.fail('OBJ without a class');
          this.push(this.call(items[0], items.slice(1), 'call'));
          break;
        }
        case 0x81: {
          const args = this.pop();
          const cls = this.pop();
          if (!(args instanceof PyTuple)) throw this.fail(`NEWOBJ arguments must be a tuple, got ${describe(args)}`);
          this.push(this.call(cls, args.items, 'new'));
          break;
        }
        case 0x92: {
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!(args instanceof PyTuple)) throw this.fail(`NEWOBJ_EX arguments must be a tuple, got ${describe(args)}`);
          if (!(kwargs instanceof Map) || kwargs.size > 0) throw this.fail('NEWOBJ_EX with keyword arguments is not supported');
          this.push(this.call(cls, args.items, 'new'));
          break;
        }
        case 0x62: {
          // BUILD: state onto the object below it.
          const state = this.pop();
          const obj = this.top();
          this.build(obj, state);
          break;
        }
        case 0x70:
          this.memoPut(this.index(this.line()), this.top());
          break;
        case 0x71:
          this.memoPut(this.u8(), this.top());
          break;
        case 0x72:
          this.memoPut(this.u32(), this.top());
          break;
        case 0x94:
          this.memoPut(this.memo.size, this.top());
          break;
        case 0x67:
          this.push(this.memoGet(this.index(this.line())));
          break;
        case 0x68:
          this.push(this.memoGet(this.u8()));
          break;
        case 0x6a:
          this.push(this.memoGet(this.u32()));
          break;
        case 0x50:
          this.push(this.persistent(this.line()));
          break;
        case 0x51:
          this.push(this.persistent(this.pop()));
          break;
        case 0x82:
        case 0x83:
        case 0x84:
          throw this.fail('EXT opcodes (the copyreg extension registry) are not supported in weights files');
        case 0x97:
        case 0x98:
          throw this.fail('out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported');
        default:
          this.pos--;
          throw this.fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
      }
    }
    throw this.fail('pickle ends without STOP (truncated file?)');
  }

  private decimal(s: string): number | bigint {
    const t = s.trim();
    if (!/^[+-]?\d+$/.test(t)) throw this.fail(`bad integer literal ${JSON.stringify(t.slice(0, 40))}`);
    if (t.length > this.limits.maxIntBytes * 2.5) throw this.fail(`integer of ${t.length} digits exceeds the limit`);
    return narrow(BigInt(t));
  }

  private index(s: string): number {
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < 0) throw this.fail(`bad memo index ${JSON.stringify(s)}`);
    return n;
  }

  private persistent(pid: unknown): unknown {
    if (!this.opts.persistentLoad) throw this.fail('persistent ids are not expected in this file');
    return this.opts.persistentLoad(pid);
  }

  private asList(v: unknown, op: string): unknown[] {
    if (!Array.isArray(v)) throw this.fail(`${op} on a ${describe(v)}, not a list`);
    return v;
  }

  private asDict(v: unknown, op: string): Map<unknown, unknown> {
    if (!(v instanceof Map)) throw this.fail(`${op} on a ${describe(v)}, not a dict`);
    return v;
  }

  private fillDict(m: Map<unknown, unknown>, items: unknown[]): Map<unknown, unknown> {
    if (items.length % 2) throw this.fail('odd number of items for a dict');
    for (let i = 0; i < items.length; i += 2) m.set(hashKey(items[i], (msg) => this.fail(msg)), items[i + 1]);
    return m;
  }

  private build(obj: unknown, state: unknown): void {
    if (obj instanceof Map) {
      // OrderedDict.__reduce__ passes instance attributes (a state dict's `_metadata`) as BUILD state.
      if (state === null) return;
      if (!(state instanceof Map)) throw this.fail(`BUILD state for a dict must be a dict, got ${describe(state)}`);
      const attrs = pyAttributes.get(obj) ?? new Map<string, unknown>();
      for (const [k, v] of state) attrs.set(String(k), v);
      pyAttributes.set(obj, attrs);
      return;
    }
    const builder = builders.get(obj as object);
    if (builder) {
      builder(obj, state);
      return;
    }
    throw this.fail(`BUILD on a ${describe(obj)} is not supported`);
  }
}

/** Objects a handler created that accept BUILD state (registered by handlers through `acceptsBuild`). */
const builders = new WeakMap<object, (obj: unknown, state: unknown) => void>();

/** Lets a handler-made object take BUILD state (tensor subclasses carry a `__dict__`). */
export function acceptsBuild<T extends object>(obj: T, apply: (obj: unknown, state: unknown) => void): T {
  builders.set(obj, apply);
  return obj;
}

function narrow(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function utf8(b: Uint8Array): string {
  return Buffer.from(b).toString('utf8');
}

/** Dict keys and set members: strings, numbers, bools, None and tuples of those (by identity) are fine. */
function hashKey(k: unknown, fail: (m: string) => Error): unknown {
  if (Array.isArray(k) || k instanceof Map || k instanceof Set) throw fail(`unhashable ${describe(k)} used as a dict key or set member`);
  return k;
}

export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof Map) return 'dict';
  if (v instanceof Set) return 'set';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyGlobal) return `global ${v.qualifiedName}`;
  if (typeof v === 'object') return v.constructor?.name ?? 'object';
  return typeof v;
}

function pyStringLiteral(s: string, fail: (m: string) => Error): string {
  const q = s[0];
  if ((q !== "'" && q !== '"') || s[s.length - 1] !== q || s.length < 2) throw fail(`STRING argument is not a quoted literal: ${s.slice(0, 40)}`);
  return s.slice(1, -1).replace(/\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)/g, (_, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    if (/^[0-7]/.test(e)) return String.fromCharCode(parseInt(e, 8));
    return ({ n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', v: '\v' } as Record<string, string>)[e] ?? `\\${e}`;
  });
}
