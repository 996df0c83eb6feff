import { describe, expect, it } from 'vitest';
import { PickleError, PyTuple, unpickle, type GlobalHandler } from '../src/io/pickle.js';
import { TORCH_ALLOWED_GLOBALS } from '../src/io/pytorch_file.js';

const none = new Map<string, GlobalHandler>();
const bytes = (...parts: (string | number[])[]) =>
  new Uint8Array(Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p)))));
const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];

describe('unpickle: values', () => {
  it('reads protocol 2 (as pickle.dumps writes it) with memo, tuples, dicts, lists, ints, floats, bytes', () => {
    // pickle.dumps({'a': [1, -2, 300, 70000, 2**40], 'b': (1.5, None, True), 'c': 'é'}, protocol=2)
    const p = bytes(
      [0x80, 0x02],
      '}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01eX\x01\x00\x00\x00bq\x03G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87q\x04X\x01\x00\x00\x00cq\x05X\x02\x00\x00\x00\xc3\xa9q\x06u.',
    );
    const v = unpickle(p, { globals: none }) as Map<string, unknown>;
    expect(v.get('a')).toEqual([1, -2, 300, 70000, 2 ** 40]);
    expect(v.get('b')).toEqual(new PyTuple([1.5, null, true]));
    expect(v.get('c')).toBe('é');
  });

  it('reads protocol 0 text opcodes and protocol 4/5 framing, MEMOIZE and STACK_GLOBAL of an allowed name', () => {
    expect(unpickle(bytes("(lp0\nI1\naI01\naL12345678901234567890L\naF0.25\naS'x\\ny'\naVh\\u00e9\na."), { globals: none })).toEqual([
      1,
      true,
      12345678901234567890n,
      0.25,
      'x\ny',
      'hé',
    ]);
    // pickle.dumps(collections.OrderedDict(a=1), protocol=4)
    const p4 = bytes(
      [0x80, 0x04, 0x95, 0x24, 0, 0, 0, 0, 0, 0, 0],
      '\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01a\x94K\x01s.',
    );
    expect(unpickle(p4, { globals: TORCH_ALLOWED_GLOBALS })).toEqual(new Map([['a', 1]]));
  });
});

describe('unpickle: malicious pickles are refused, naming the global, and never run', () => {
  let ran = false;
  // A trap: if the unpickler ever resolved a global by name from the host, this would flip.
  (globalThis as Record<string, unknown>).__sf_trap = () => {
    ran = true;
  };
  const cases: [string, Uint8Array, string][] = [
    ['os.system via GLOBAL + REDUCE (protocol 0)', bytes("cos\nsystem\n(S'echo pwned'\ntR."), 'os.system'],
    ['posix.system (what pickle writes for os.system on Linux)', bytes([0x80, 0x02], "cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."), 'posix.system'],
    ['__builtin__.eval (protocol 2 fix_imports name)', bytes([0x80, 0x02], "c__builtin__\neval\nX\x0e\x00\x00\x00__import__('os')\x85R."), '__builtin__.eval'],
    ['builtins.exec via STACK_GLOBAL (protocol 4)', bytes([0x80, 0x04], '\x8c\x08builtins\x8c\x04exec\x93\x8c\x05print\x85R.'), 'builtins.exec'],
    ['subprocess.Popen via INST', bytes("(S'ls'\nisubprocess\nPopen\n."), 'subprocess.Popen'],
    ['builtins.getattr via OBJ', bytes('(cbuiltins\ngetattr\nS\'x\'\nS\'y\'\no.'), 'builtins.getattr'],
    ['copyreg._reconstructor via NEWOBJ', bytes([0x80, 0x02], 'ccopy_reg\n_reconstructor\n)\x81.'), 'copy_reg._reconstructor'],
    ['torch.load nested in an otherwise valid state dict', bytes([0x80, 0x02], 'ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00actorch\nload\n)Ru.'), 'torch.load'],
    ['numpy scalar reconstruction', bytes([0x80, 0x02], 'cnumpy.core.multiarray\nscalar\n)R.'), 'numpy.core.multiarray.scalar'],
  ];
  it.each(cases)('%s', (_label, p, name) => {
    expect(() => unpickle(p, { globals: TORCH_ALLOWED_GLOBALS, source: 'evil.pkl' })).toThrow(PickleError);
    expect(() => unpickle(p, { globals: TORCH_ALLOWED_GLOBALS, source: 'evil.pkl' })).toThrow(
      new RegExp(`evil\\.pkl: refusing to load global '${name.replace(/\./g, '\\.')}'.*nothing was executed`),
    );
    expect(ran).toBe(false);
  });

  it('an allowed name used to call something that is not callable is refused', () => {
    expect(() => unpickle(bytes('ctorch\nFloatStorage\n)R.'), { globals: TORCH_ALLOWED_GLOBALS })).toThrow(/allow-listed as a value, not as something to call/);
  });
});

describe('unpickle: resource limits refuse bombs early', () => {
  it('a string claiming 4 GiB in a tiny file', () => {
    expect(() => unpickle(bytes([0x80, 0x02, 0x58], u32(0xfffffff0), 'ab.'), { globals: none })).toThrow(/BINUNICODE claims 4294967280 bytes but only 3 remain/);
    expect(() => unpickle(bytes([0x80, 0x04, 0x8e, 0, 0, 0, 0, 0, 0, 0, 0x10], '.'), { globals: none })).toThrow(/absurd|claims/);
  });
  it('deep nesting of MARKs', () => {
    expect(() => unpickle(bytes('('.repeat(5000), '.'), { globals: none })).toThrow(/nesting deeper than 1000 levels/);
  });
  it('a memo that grows past the limit', () => {
    const ops: number[] = [0x80, 0x04, 0x4e];
    for (let i = 0; i < 20; i++) ops.push(0x94);
    ops.push(0x2e);
    expect(() => unpickle(new Uint8Array(ops), { globals: none, limits: { maxMemo: 10 } })).toThrow(/memo exceeds 10 entries/);
  });
  it('a huge integer', () => {
    expect(() => unpickle(bytes([0x80, 0x02, 0x8b], u32(100000), '.'), { globals: none })).toThrow(/integer of 100000 bytes exceeds/);
  });
  it('a stack that grows past the limit', () => {
    expect(() => unpickle(bytes('N'.repeat(100), '.'), { globals: none, limits: { maxStack: 50 } })).toThrow(/stack exceeds 50 items/);
  });
  it('malformed streams: truncation, unknown opcode, missing memo key, out-of-band buffers', () => {
    expect(() => unpickle(bytes([0x80, 0x02], 'K'), { globals: none })).toThrow(/claims 1 bytes but only 0 remain/);
    expect(() => unpickle(bytes([0x80, 0x02, 0x4e]), { globals: none })).toThrow(/ends without STOP/);
    expect(() => unpickle(bytes([0xff]), { globals: none })).toThrow(/unknown opcode 0xff/);
    expect(() => unpickle(bytes('h\x07.'), { globals: none })).toThrow(/memo key 7 was never stored/);
    expect(() => unpickle(bytes([0x80, 0x05, 0x97, 0x2e]), { globals: none })).toThrow(/out-of-band/);
    expect(() => unpickle(bytes('Q.'), { globals: none })).toThrow(/stack underflow/);
  });
});
