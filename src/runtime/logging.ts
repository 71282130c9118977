// Structured JSON logs (pino). Every component takes a Logger; reconcile lines
// carry the object key through child loggers.
import { pino, type Logger } from "pino";

export type { Logger } from "pino";

export function createLogger(options: { name: string; level?: string }): Logger {
  return pino({ name: options.name, level: options.level ?? process.env.KSR_LOG_LEVEL ?? "info" });
}

/** For library users who pass no logger. */
export const silentLogger: Logger = pino({ level: "silent" });

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
