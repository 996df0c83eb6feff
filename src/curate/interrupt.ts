/**
 * Ctrl-C and SIGTERM for long curation runs: the first signal asks the run to stop after the files in progress
 * (their analyses are already in the state file, so a re-run continues where this one stopped); a second signal
 * exits at once. Exit codes follow the shell convention, 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
 */

export interface Interrupt {
  /** Aborted on the first SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
  /** The signal received, if any. */
  readonly received: NodeJS.Signals | undefined;
  /** 130 (SIGINT) or 143 (SIGTERM) once a signal arrived, else 0. */
  readonly exitCode: number;
  /** Removes the handlers (the process's default behaviour returns). */
  dispose(): void;
}

export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1);
}

export function interruptOnSignals(what: string, stream: NodeJS.WritableStream = process.stderr): Interrupt {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const handler = (sig: NodeJS.Signals) => {
    if (received) {
      stream.write(`\n${sig} again: ${what} aborting at once\n`);
      process.exit(signalExitCode(sig));
    }
    received = sig;
    stream.write(`\n${sig}: ${what} stops after the files in progress and saves what is done (${sig === 'SIGINT' ? 'Ctrl-C' : 'the signal'} again aborts at once)\n`);
    controller.abort(sig);
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
      for (const s of signals) process.off(s, handler);
    },
  };
}
