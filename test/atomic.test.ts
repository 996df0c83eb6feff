import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isAtomicTempFile, writeFileAtomic, writeFileAtomicSync } from '../src/io/atomic.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-atomic-'));
});
afterEach(() => {
  vi.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  it('writes bytes, text and writer-function content', async () => {
    const p = path.join(dir, 'a.bin');
    await writeFileAtomic(p, new Uint8Array([1, 2, 3]));
    expect([...fs.readFileSync(p)]).toEqual([1, 2, 3]);
    await writeFileAtomic(p, 'héllo');
    expect(fs.readFileSync(p, 'utf8')).toBe('héllo');
    await writeFileAtomic(p, async (fd) => {
      fs.writeSync(fd, Buffer.from('ab'));
      await new Promise((r) => setTimeout(r, 1));
      fs.writeSync(fd, Buffer.from('cd'));
    });
    expect(fs.readFileSync(p, 'utf8')).toBe('abcd');
    expect(fs.readdirSync(dir)).toEqual(['a.bin']);
  });

  it('leaves the previous file intact and no temp file when the writer fails midway', async () => {
    const p = path.join(dir, 'model.safetensors');
    fs.writeFileSync(p, 'previous');
    let sawTemp = false;
    await expect(
      writeFileAtomic(p, (fd) => {
        fs.writeSync(fd, Buffer.alloc(4096, 7));
        // The half-written temp file must exist next to the target while we write.
        sawTemp = fs.readdirSync(dir).some((n) => isAtomicTempFile(n));
        const err = new Error('ENOSPC: no space left on device') as NodeJS.ErrnoException;
        err.code = 'ENOSPC';
        throw err;
      }),
    ).rejects.toThrow(/ENOSPC/);
    expect(sawTemp).toBe(true);
    expect(fs.readFileSync(p, 'utf8')).toBe('previous');
    expect(fs.readdirSync(dir)).toEqual(['model.safetensors']);
  });

  it('sync variant: failure leaves previous file and no temp file', () => {
    const p = path.join(dir, 'x.json');
    writeFileAtomicSync(p, '{"a":1}');
    expect(() =>
      writeFileAtomicSync(p, (fd) => {
        fs.writeSync(fd, Buffer.from('{"a":'));
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(fs.readFileSync(p, 'utf8')).toBe('{"a":1}');
    expect(fs.readdirSync(dir)).toEqual(['x.json']);
  });

  it('fsyncs the temp file before the rename and the directory after it', async () => {
    const calls: string[] = [];
    const realFsync = fs.fsyncSync;
    const realRename = fs.renameSync;
    vi.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
      calls.push(fs.fstatSync(fd).isDirectory() ? 'fsync-dir' : 'fsync-file');
      realFsync(fd);
    });
    vi.spyOn(fs, 'renameSync').mockImplementation((a, b) => {
      calls.push('rename');
      realRename(a, b);
    });
    await writeFileAtomic(path.join(dir, 'c.txt'), 'x');
    expect(calls).toEqual(['fsync-file', 'rename', 'fsync-dir']);
  });

  it('a failed rename removes the temp file', async () => {
    const p = path.join(dir, 'target');
    fs.mkdirSync(p); // renaming a file over a non-empty directory fails
    fs.writeFileSync(path.join(p, 'keep'), 'k');
    await expect(writeFileAtomic(p, 'data')).rejects.toThrow();
    expect(fs.readdirSync(dir)).toEqual(['target']);
  });
});
