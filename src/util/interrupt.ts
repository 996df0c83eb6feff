/**
 * Ctrl-C and SIGTERM for long jobs (training, curation, evaluation): the first signal asks the job to stop at
 * its next safe point (after the training step, or the files / images in progress) and keep what is done; a
 * second signal exits at once. Exit codes follow the shell convention, 128 + signal number: 130 for SIGINT,
 * 143 for SIGTERM.
 */

export interface InterruptMessages {
  /** What the job does on the first signal, e.g. "stopping after the step in progress and writing a checkpoint". */
  first: string;
  /** What a second signal leaves behind, e.g. "aborting; the state file keeps every file analysed so far". */
  second: string;
}

export interface Interrupt {
  /** Aborted on the first SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
  /** The signal received, if any. */
  readonly received: NodeJS.Signals | undefined;
  /** 130 (SIGINT) or 143 (SIGTERM) once a signal arrived, else 0. */
  readonly exitCode: number;
  /** Removes the handlers (the process's default behaviour returns), unless a signal already arrived. */
  dispose(): void;
}

export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1);
}

export function interruptOnSignals(
  messages: InterruptMessages,
  opts: { stream?: NodeJS.WritableStream; onStop?: (sig: NodeJS.Signals) => void } = {},
): Interrupt {
  const stream = opts.stream ?? process.stderr;
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const handler = (sig: NodeJS.Signals) => {
    if (received) {
      stream.write(`\n${sig} again: ${messages.second}\n`);
      process.exit(signalExitCode(sig));
    }
    received = sig;
    stream.write(`\n${sig}: ${messages.first} (${sig === 'SIGINT' ? 'Ctrl-C' : 'the signal'} again aborts at once)\n`);
    controller.abort(sig);
    opts.onStop?.(sig);
  };
  const signals = ['SIGINT', 'SIGTERM'] as const;
  for (const s of signals) process.on(s, handler);
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    get exitCode() {
      return received ? signalExitCode(received) : 0;
    },
    dispose() {
      // After a signal the process is on its way out: a second one, even during shutdown, must still exit
      // with 130/143 and say so, not fall through to the default handler.
      if (received) return;
      for (const s of signals) process.off(s, handler);
    },
  };
}
