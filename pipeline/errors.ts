/**
 * One error type for everything a user can fix: it names the file and the reason,
 * and the CLI prints it without a stack trace.
 */
export class TagsegError extends Error {
  readonly file?: string;
  readonly reason: string;
  readonly hint?: string;

  constructor(reason: string, opts: { file?: string; hint?: string; cause?: unknown } = {}) {
    const where = opts.file ? `${opts.file}: ` : '';
    super(`${where}${reason}${opts.hint ? `\n  hint: ${opts.hint}` : ''}`, { cause: opts.cause });
    this.name = 'TagsegError';
    this.file = opts.file;
    this.reason = reason;
    this.hint = opts.hint;
  }
}

/** Short message of an unknown thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
