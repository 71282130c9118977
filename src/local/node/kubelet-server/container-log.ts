// Container logs in the CRI format the kubelet reads (`TIMESTAMP STREAM TAG
// CONTENT`, TAG F for a full line, P for a partial one), so `kubectl logs`
// options that need a time per line (--timestamps, --since) work: the node
// reads the container's stdout and stderr through pipes and writes each line
// with the time it arrived, as a container runtime's shim does.
import { closeSync, createWriteStream, fstatSync, openSync, readSync } from "node:fs";
import type { Readable } from "node:stream";

export type LogStream = "stdout" | "stderr";

export interface LogEntry {
  /** Nanoseconds since the epoch. */
  time: bigint;
  stream: LogStream;
  /** Ends a line (F) or continues on the next entry (P). */
  full: boolean;
  content: Buffer;
}

const originNs = BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n;

/** Now, with the sub-millisecond precision the monotonic clock gives. */
export function nowNs(): bigint {
  return originNs + BigInt(Math.round(performance.now() * 1e6));
}

/** RFC 3339 with nanoseconds and trailing zeros dropped, as Go's time.RFC3339Nano prints. */
export function formatTimestamp(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const base = new Date(ms).toISOString().slice(0, 19);
  const fraction = (ns % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "");
  return `${base}${fraction === "" ? "" : "." + fraction}Z`;
}

export function parseTimestamp(text: string): bigint | undefined {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(text);
  if (match === null) return undefined;
  const seconds = Date.parse(`${match[1]}Z`);
  if (Number.isNaN(seconds)) return undefined;
  return BigInt(seconds) * 1_000_000n + BigInt((match[2] ?? "").padEnd(9, "0"));
}

export function encodeEntry(entry: LogEntry): Buffer {
  const prefix = `${formatTimestamp(entry.time)} ${entry.stream} ${entry.full ? "F" : "P"} `;
  return Buffer.concat([Buffer.from(prefix), entry.content, Buffer.from("\n")]);
}

/** Parses one line of a log file (without its newline); undefined for a line that is not an entry. */
export function decodeEntry(line: Buffer): LogEntry | undefined {
  const spaces: number[] = [];
  for (let i = 0; i < line.length && spaces.length < 3; i++) if (line[i] === 0x20) spaces.push(i);
  const [a, b, c] = spaces;
  if (a === undefined || b === undefined || c === undefined) return undefined;
  const time = parseTimestamp(line.subarray(0, a).toString());
  const stream = line.subarray(a + 1, b).toString();
  const tag = line.subarray(b + 1, c).toString();
  if (time === undefined || (stream !== "stdout" && stream !== "stderr") || (tag !== "F" && tag !== "P"))
    return undefined;
  return { time, stream, full: tag === "F", content: line.subarray(c + 1) };
}

/** Splits a chunk of output into entries: each complete line is F, a trailing incomplete part P. */
export function entriesOf(chunk: Buffer, stream: LogStream, time: bigint): LogEntry[] {
  const entries: LogEntry[] = [];
  let start = 0;
  for (let i = 0; i < chunk.length; i++) {
    if (chunk[i] !== 0x0a) continue;
    entries.push({ time, stream, full: true, content: chunk.subarray(start, i) });
    start = i + 1;
  }
  if (start < chunk.length) entries.push({ time, stream, full: false, content: chunk.subarray(start) });
  return entries;
}

/** Writes a container's stdout and stderr into one CRI-format log file; resolves once both ended. */
export function writeContainerLog(path: string, outputs: { stdout: Readable; stderr: Readable }): Promise<void> {
  const file = createWriteStream(path, { flags: "a" });
  const pump = (source: Readable, stream: LogStream) =>
    new Promise<void>((resolve) => {
      source.on("data", (chunk: Buffer) => {
        for (const entry of entriesOf(chunk, stream, nowNs())) file.write(encodeEntry(entry));
      });
      source.on("close", resolve);
      source.on("error", () => {
        resolve();
      });
    });
  return Promise.all([pump(outputs.stdout, "stdout"), pump(outputs.stderr, "stderr")]).then(
    () => new Promise<void>((resolve) => file.end(resolve)),
  );
}

/** What `kubectl logs` asks for (the kubelet's PodLogOptions). */
export interface LogQuery {
  /** Only entries at or after this time (ns). */
  sinceNs?: bigint;
  /** Only the last N lines. */
  tailLines?: number;
  timestamps?: boolean;
  /** Stop after this many bytes of output. */
  limitBytes?: number;
}

/** A log line as the client sees it: its time, and its content with the partial entries joined. */
export interface LogLine {
  time: bigint;
  text: Buffer;
  /** False for a trailing line still being written (no F entry yet). */
  complete: boolean;
}

/** Joins P entries with the F entry that ends them; stdout and stderr are interleaved as they arrived. */
export function joinLines(entries: LogEntry[]): LogLine[] {
  const lines: LogLine[] = [];
  const open = new Map<LogStream, { time: bigint; parts: Buffer[] }>();
  for (const entry of entries) {
    const pending = open.get(entry.stream) ?? { time: entry.time, parts: [] };
    pending.parts.push(entry.content);
    if (entry.full) {
      lines.push({ time: pending.time, text: Buffer.concat(pending.parts), complete: true });
      open.delete(entry.stream);
    } else open.set(entry.stream, pending);
  }
  for (const pending of open.values())
    lines.push({ time: pending.time, text: Buffer.concat(pending.parts), complete: false });
  return lines;
}

export function renderLine(line: LogLine, timestamps: boolean): Buffer {
  const parts = [line.text, ...(line.complete ? [Buffer.from("\n")] : [])];
  if (timestamps) parts.unshift(Buffer.from(`${formatTimestamp(line.time)} `));
  return Buffer.concat(parts);
}

/** Applies since and tail to a whole file's lines (limitBytes is the writer's business). */
export function selectLines(lines: LogLine[], query: LogQuery): LogLine[] {
  const since = query.sinceNs;
  const recent = since === undefined ? lines : lines.filter((line) => line.time >= since);
  if (query.tailLines === undefined) return recent;
  return query.tailLines <= 0 ? [] : recent.slice(-query.tailLines);
}

/** Reads a CRI log file from an offset: its entries and the offset after the last complete line. */
export function readEntries(path: string, offset = 0): { entries: LogEntry[]; next: number } {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    if (size <= offset) return { entries: [], next: offset };
    const buffer = Buffer.alloc(size - offset);
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, offset + read);
      if (n === 0) break;
      read += n;
    }
    const end = buffer.lastIndexOf(0x0a, read - 1);
    if (end < 0) return { entries: [], next: offset };
    const entries: LogEntry[] = [];
    let start = 0;
    for (let i = 0; i <= end; i++) {
      if (buffer[i] !== 0x0a) continue;
      const entry = decodeEntry(buffer.subarray(start, i));
      if (entry !== undefined) entries.push(entry);
      start = i + 1;
    }
    return { entries, next: offset + end + 1 };
  } finally {
    closeSync(fd);
  }
}

/** A log file's content as the container wrote it (ksr local logs, tests). */
export function logText(path: string): string {
  return Buffer.concat(joinLines(readEntries(path).entries).map((line) => renderLine(line, false))).toString("utf8");
}
