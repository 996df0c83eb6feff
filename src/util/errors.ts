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
