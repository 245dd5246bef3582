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

/** What a user can do about each file-system error code (anything else is reported as it is). */
const at = (f: string | undefined) => (f ? ` ${f}` : '');
const FS_CODES: Record<string, { what: string; hint: (file: string | undefined) => string }> = {
  EACCES: { what: 'permission denied', hint: (f) => `make${at(f) || ' it'} (or its folder) writable by this user, or point the output elsewhere` },
  EPERM: { what: 'operation not permitted', hint: (f) => `check the permissions and attributes of${at(f) || ' the file'} and its folder` },
  EROFS: { what: 'the file system is read-only', hint: () => 'run the project from a writable folder (or remount it read-write)' },
  ENOSPC: { what: 'no space left on the device', hint: (f) => `free disk space${f ? ` where ${f} lives` : ''} (df -h) and rerun; a stage keeps its previous outputs` },
  EDQUOT: { what: 'disk quota exceeded', hint: (f) => `free space in your quota${f ? ` where ${f} lives` : ''} and rerun; a stage keeps its previous outputs` },
  ENOENT: { what: 'no such file or folder', hint: () => 'check the path' },
  ENOTDIR: { what: 'a part of the path is a file, not a folder', hint: () => 'rename or remove the file that is in the way' },
  EISDIR: { what: 'is a folder, expected a file', hint: () => 'rename or remove the folder that is in the way' },
  EEXIST: { what: 'already exists', hint: () => 'remove it or choose another name' },
  EMFILE: { what: 'too many open files', hint: () => 'raise the limit (ulimit -n) or lower the concurrency' },
};

/** Whether `err` is a Node file-system error the user can fix (permissions, full disk, a path in the way). */
export function isUserFsError(err: unknown): err is NodeJS.ErrnoException {
  const e = err as NodeJS.ErrnoException | undefined;
  return typeof e?.code === 'string' && e.code in FS_CODES && typeof e.syscall === 'string';
}

/**
 * A file-system error as a TagsegError: `action` (what tagseg was doing), the file, what went wrong
 * and what to do. Errors that are not file-system errors are wrapped with their message.
 */
export function fsError(err: unknown, action: string, file?: string): TagsegError {
  if (err instanceof TagsegError) return err;
  const e = err as NodeJS.ErrnoException;
  const where = file ?? e?.path;
  const known = isUserFsError(err) ? FS_CODES[e.code!] : undefined;
  if (!known) return new TagsegError(`${action}: ${messageOf(err)}`, { file: where, cause: err });
  const other = e.path && where && e.path !== where ? ` (at ${e.path})` : '';
  return new TagsegError(`${action}: ${known.what} [${e.code}]${other}`, { file: where, hint: known.hint(where), cause: err });
}

/**
 * A user-caused failure (TagsegError, or a file-system error such as EACCES/ENOSPC/EROFS, named by
 * its path) is one message without a stack; anything else is a bug: 'unexpected error' and its stack.
 * `--debug` adds the stack (and causes) to every error.
 */
export function formatError(err: unknown, debug: boolean): string {
  const user = err instanceof TagsegError ? err : isUserFsError(err) ? fsError(err, 'file-system error') : undefined;
  const stack = (e: unknown): string => (e instanceof Error ? `${e.stack ?? ''}${e.cause ? `\ncaused by: ${stack(e.cause)}` : ''}` : '');
  if (user) return `tagseg: ${user.message}\n${debug ? `${stack(err)}\n` : ''}`;
  return `tagseg: unexpected error: ${messageOf(err)}\n${stack(err)}\n`;
}
