import { tf } from '../backend/tf.js';

/** A tensor as it sits in a file: shape plus row-major float or int data. */
export interface HostTensor {
  shape: number[];
  data: Float32Array | Int32Array;
}
export type StateDictInput = Map<string, tf.Tensor | HostTensor> | Record<string, tf.Tensor | HostTensor>;

export interface LoadReport {
  missing: string[];
  unexpected: string[];
}

export class StateDictError extends Error {
  override readonly name = 'StateDictError';
  constructor(
    message: string,
    readonly missing: string[] = [],
    readonly unexpected: string[] = [],
    readonly mismatched: { key: string; expected: number[]; got: number[] }[] = [],
  ) {
    super(message);
  }
}

/**
 * PyTorch-style module: owns named parameters (tf.Variable), buffers and child modules, so that
 * `stateDict()` keys read like `blocks.3.attn.qkv.weight` and map one to one onto safetensors files.
 * Subclasses register children in their constructor and define their own `forward(...)`.
 */
export class Module {
  training = true;
  private readonly params = new Map<string, tf.Variable>();
  private readonly buffers = new Map<string, { value: tf.Tensor; persistent: boolean }>();
  private readonly children = new Map<string, Module>();

  /** Register a parameter; the module takes ownership of `init` (it becomes the variable's value). */
  protected param(name: string, init: tf.Tensor, trainable = true): tf.Variable {
    assertLocalName(name);
    const v = tf.variable(init, trainable);
    init.dispose();
    this.params.set(name, v);
    return v;
  }

  /** Register a buffer (non-trained state such as running statistics or fixed embeddings). */
  protected buffer(name: string, value: tf.Tensor, persistent = true): tf.Tensor {
    assertLocalName(name);
    this.buffers.get(name)?.value.dispose();
    const kept = tf.keep(value);
    this.buffers.set(name, { value: kept, persistent });
    return kept;
  }

  protected getBuffer(name: string): tf.Tensor {
    const b = this.buffers.get(name);
    if (!b) throw new Error(`no buffer '${name}'`);
    return b.value;
  }

  /** Register a child module under `name`. */
  protected module<M extends Module>(name: string, child: M): M {
    assertLocalName(name);
    this.children.set(name, child);
    return child;
  }

  /**
   * Attach a child to an already built module. Adapters use it to hang their weights on the layer
   * they adapt, so the names read `blocks.0.attn.qkv.lora_A.weight` as PEFT writes them.
   */
  attachModule<M extends Module>(name: string, child: M): M {
    if (this.children.has(name) || this.params.has(name) || this.buffers.has(name))
      throw new Error(`cannot attach '${name}': the module already has a member of that name`);
    return this.module(name, child);
  }

  /** Remove a child (not disposed: it goes back to the caller); undefined if there is none. */
  detachModule(name: string): Module | undefined {
    const child = this.children.get(name);
    this.children.delete(name);
    return child;
  }

  namedChildren(): [string, Module][] {
    return [...this.children.entries()];
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, child] of this.children) yield* child.namedModules(join(prefix, name));
  }

  *namedParameters(prefix = ''): Generator<[string, tf.Variable]> {
    for (const [name, p] of this.params) yield [join(prefix, name), p];
    for (const [name, child] of this.children) yield* child.namedParameters(join(prefix, name));
  }

  *namedBuffers(prefix = '', persistentOnly = false): Generator<[string, tf.Tensor]> {
    for (const [name, b] of this.buffers) if (!persistentOnly || b.persistent) yield [join(prefix, name), b.value];
    for (const [name, child] of this.children) yield* child.namedBuffers(join(prefix, name), persistentOnly);
  }

  parameters(): tf.Variable[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }

  trainableParameters(): Map<string, tf.Variable> {
    return new Map([...this.namedParameters()].filter(([, p]) => p.trainable));
  }

  numParameters(trainableOnly = false): number {
    let n = 0;
    for (const [, p] of this.namedParameters()) if (!trainableOnly || p.trainable) n += p.size;
    return n;
  }

  /** Freeze (requiresGrad=false) or unfreeze every parameter below this module. */
  requiresGrad(flag: boolean): this {
    for (const [, p] of this.namedParameters()) p.trainable = flag;
    return this;
  }
  freeze(): this {
    return this.requiresGrad(false);
  }
  unfreeze(): this {
    return this.requiresGrad(true);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Parameters and persistent buffers by dotted name. The tensors are the live ones: do not dispose. */
  stateDict(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const [k, v] of this.namedParameters()) out.set(k, v);
    for (const [k, v] of this.namedBuffers('', true)) out.set(k, v);
    return out;
  }

  /**
   * Copy values in by name. strict: every key must match both ways; non-strict: load the
   * intersection and report the rest. A shape mismatch is always an error, naming both shapes.
   */
  loadStateDict(input: StateDictInput, opts: { strict?: boolean } = {}): LoadReport {
    const strict = opts.strict ?? true;
    const src = input instanceof Map ? input : new Map(Object.entries(input));
    const targets = new Map<string, { assign: (t: tf.Tensor) => void; shape: number[] }>();
    for (const [k, p] of this.namedParameters()) targets.set(k, { assign: (t) => p.assign(t), shape: p.shape });
    for (const [owner, prefix] of this.bufferOwners()) {
      for (const [name, b] of owner.buffers) {
        if (!b.persistent) continue;
        targets.set(join(prefix, name), { assign: (t) => owner.buffer(name, t.clone(), true), shape: b.value.shape });
      }
    }
    const missing = [...targets.keys()].filter((k) => !src.has(k));
    const unexpected = [...src.keys()].filter((k) => !targets.has(k));
    const mismatched: { key: string; expected: number[]; got: number[] }[] = [];
    for (const [k, t] of targets) {
      const s = src.get(k);
      if (s && !sameShape(s.shape, t.shape)) mismatched.push({ key: k, expected: t.shape, got: [...s.shape] });
    }
    if (mismatched.length > 0 || (strict && (missing.length > 0 || unexpected.length > 0))) {
      const lines: string[] = [];
      for (const m of mismatched) lines.push(`  size mismatch for ${m.key}: expected [${m.expected}], got [${m.got}]`);
      if (strict && missing.length) lines.push(`  missing keys (${missing.length}): ${preview(missing)}`);
      if (strict && unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${preview(unexpected)}`);
      throw new StateDictError(`Error(s) loading state dict:\n${lines.join('\n')}`, missing, unexpected, mismatched);
    }
    for (const [k, t] of targets) {
      const s = src.get(k);
      if (!s) continue;
      const value = s instanceof tf.Tensor ? s : tf.tensor(s.data, s.shape, s.data instanceof Int32Array ? 'int32' : 'float32');
      t.assign(value);
      if (value !== s) value.dispose();
    }
    return { missing, unexpected };
  }

  private *bufferOwners(prefix = ''): Generator<[Module, string]> {
    yield [this, prefix];
    for (const [name, child] of this.children) yield* child.bufferOwners(join(prefix, name));
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
    for (const b of this.buffers.values()) b.value.dispose();
    for (const c of this.children.values()) c.dispose();
    this.params.clear();
    this.buffers.clear();
  }
}

/** Children named 0, 1, 2 … as in torch.nn.ModuleList. */
export class ModuleList<M extends Module = Module> extends Module implements Iterable<M> {
  private readonly items: M[] = [];
  constructor(items: M[] = []) {
    super();
    for (const m of items) this.push(m);
  }
  push(m: M): this {
    this.module(String(this.items.length), m);
    this.items.push(m);
    return this;
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): M {
    const m = this.items[i];
    if (!m) throw new RangeError(`ModuleList index ${i} out of range (length ${this.items.length})`);
    return m;
  }
  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function assertLocalName(name: string): void {
  if (!name || name.includes('.')) throw new Error(`invalid module member name '${name}': must be non-empty without '.'`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function preview(keys: string[]): string {
  return keys.length <= 8 ? keys.join(', ') : `${keys.slice(0, 8).join(', ')}, … (+${keys.length - 8})`;
}
