import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** What to put in the file: bytes, UTF-8 text, or a function that writes to the open descriptor itself. */
export type AtomicContent = Uint8Array | string | ((fd: number) => void | Promise<void>);
export type AtomicContentSync = Uint8Array | string | ((fd: number) => void);

/**
 * A fault to inject into every atomic write (tests): called with the target after the temp file is
 * open and before any byte is written; what it throws fails the write as a full disk would.
 */
export type WriteFault = (target: string) => void;
let writeFault: WriteFault | null = null;

/** Install (or with null, remove) the write fault; returns the previous one. */
export function setWriteFault(fault: WriteFault | null): WriteFault | null {
  const prev = writeFault;
  writeFault = fault;
  return prev;
}

/** An error shaped like the one the OS gives when the disk is full. */
export function noSpaceError(target: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOSPC: no space left on device, write '${target}'`), { code: 'ENOSPC', errno: -28, syscall: 'write', path: target });
}

export interface AtomicWriteOptions {
  /** Permission bits for a new file (default 0o644, before the umask). */
  mode?: number;
}

/**
 * Replace `target` so that a reader (or a crash) sees either the old file or the complete new one,
 * never a torn one: write a temp file in the same directory (rename is only atomic within one
 * file system), fsync it, rename it over the target, then fsync the directory so the rename
 * itself survives a power cut. On any failure the temp file is removed and the old file stays.
 */
export async function writeFileAtomic(target: string, content: AtomicContent, opts: AtomicWriteOptions = {}): Promise<void> {
  const tmp = tempPathFor(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode ?? 0o644);
    writeFault?.(target);
    if (typeof content === 'function') await content(fd);
    else writeAll(fd, typeof content === 'string' ? Buffer.from(content, 'utf8') : content);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    cleanUp(fd, tmp);
    throw withTarget(e, target);
  }
  fsyncDirectory(path.dirname(target));
}

/** Synchronous twin of writeFileAtomic, for exit handlers and other places that cannot await. */
export function writeFileAtomicSync(target: string, content: AtomicContentSync, opts: AtomicWriteOptions = {}): void {
  const tmp = tempPathFor(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode ?? 0o644);
    writeFault?.(target);
    if (typeof content === 'function') content(fd);
    else writeAll(fd, typeof content === 'string' ? Buffer.from(content, 'utf8') : content);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    cleanUp(fd, tmp);
    throw withTarget(e, target);
  }
  fsyncDirectory(path.dirname(target));
}

/** True for the names writeFileAtomic uses for its temp files, so directory listings can skip them. */
export function isAtomicTempFile(name: string): boolean {
  return /^\..+\.\d+\.[0-9a-f]{12}\.tmp$/.test(path.basename(name));
}

/** Write every byte; writeSync may write less than asked (and at most 2 GiB per call). */
export function writeAll(fd: number, data: Uint8Array): void {
  const maxChunk = 1 << 30;
  let off = 0;
  while (off < data.byteLength) {
    const n = fs.writeSync(fd, data, off, Math.min(maxChunk, data.byteLength - off));
    off += n;
  }
}

/** OS errors name the temp file or nothing; say which file could not be written, keeping the code. */
function withTarget(e: unknown, target: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string' || e.message.includes(target)) return e;
  return Object.assign(new Error(`${e.message} (writing ${target})`), { code: err.code, errno: err.errno, syscall: err.syscall, path: target });
}

function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  // Hidden, and unique per process and call, so concurrent writers of one target never share a temp file.
  return path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

function cleanUp(fd: number | undefined, tmp: string): void {
  if (fd !== undefined) {
    try {
      fs.closeSync(fd);
    } catch {
      // the original error is the one worth reporting
    }
  }
  try {
    fs.unlinkSync(tmp);
  } catch {
    // already gone (e.g. open failed)
  }
}

function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    // Some file systems (and Windows) refuse to fsync a directory; the data itself is already durable.
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EINVAL' && code !== 'EPERM' && code !== 'ENOTSUP') throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
