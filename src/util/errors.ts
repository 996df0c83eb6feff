/** A mistake in how the tool was called or configured: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = 2;
}

/** A failure of the data or the environment (corrupt file, disk full): exit code 1, message first. */
export class JobError extends Error {
  override readonly name = 'JobError';
  readonly exitCode = 1;
}

/** A job stopped by SIGINT/SIGTERM after saving what it had done: the message says how to continue; exit 130/143. */
export class Interrupted extends Error {
  override readonly name = 'Interrupted';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}
