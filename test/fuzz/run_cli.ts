import { main } from '../../src/cli/main.js';

/** Runs the CLI in this process (a child process costs seconds of start-up) and captures what it prints. */
export async function runCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const origOut = process.stdout.write.bind(process.stdout);
  const origErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string | Uint8Array) => ((stdout += String(s)), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => ((stderr += String(s)), true)) as typeof process.stderr.write;
  const before = process.exitCode;
  try {
    process.exitCode = undefined;
    const code = await main(argv);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = origOut;
    process.stderr.write = origErr;
    process.exitCode = before;
  }
}

/** What a crash looks like in CLI output: a JavaScript error class or a stack frame. */
export function crashSigns(text: string): string[] {
  return text.split('\n').filter((l) => /\b(TypeError|RangeError|ReferenceError|SyntaxError)\b|^\s+at .+[(:]\d+/.test(l));
}
