// Errors of the undo journal; each message says what is wrong and where.

export class JournalCorruptError extends Error {
  constructor(where: string, reason: string) {
    super(`undo journal is corrupt at ${where}: ${reason}`);
    this.name = "JournalCorruptError";
  }
}

/** A request the journal cannot honour as asked (unknown point, journal busy, bad destination). */
export class JournalUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JournalUsageError";
  }
}
