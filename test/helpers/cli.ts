import { vi } from 'vitest';
import { main } from '../../src/cli/main.js';

/** Runs the CLI in-process, returning its exit code and what it wrote to stdout and stderr. */
export async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const prev = process.exitCode;
  try {
    const code = await main(args);
    return { code, out: out.mock.calls.map((c) => String(c[0])).join(''), err: err.mock.calls.map((c) => String(c[0])).join('') };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = prev;
  }
}
