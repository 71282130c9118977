// /containerLogs: a container's log file rendered as `kubectl logs` asks for
// it (tailLines, sinceSeconds/sinceTime, timestamps, limitBytes), and with
// follow, new lines as they are written until the container's run ends or
// the client goes away.
import type { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  formatTimestamp,
  joinLines,
  nowNs,
  readEntries,
  renderLine,
  selectLines,
  type LogEntry,
  type LogQuery,
  type LogStream,
} from "./container-log.js";

export class LogQueryError extends Error {}

export interface ContainerLogQuery extends LogQuery {
  follow: boolean;
  previous: boolean;
  /** Skip what is already in the file (attach). */
  fromEnd?: boolean;
}

const booleanParam = (query: URLSearchParams, name: string) => {
  const value = query.get(name);
  if (value === null || value === "" || value === "false" || value === "0") return false;
  if (value === "true" || value === "1") return true;
  throw new LogQueryError(`${name}=${value} is not a boolean (true or false)`);
};

const integerParam = (query: URLSearchParams, name: string, min: number): number | undefined => {
  const value = query.get(name);
  if (value === null || value === "") return undefined;
  if (!/^-?\d+$/.test(value) || Number(value) < min)
    throw new LogQueryError(`${name}=${value} must be an integer of at least ${min}`);
  return Number(value);
};

/** The kubelet's PodLogOptions from the query string, validated as the API validates them. */
export function parseLogQuery(query: URLSearchParams, now = nowNs()): ContainerLogQuery {
  const sinceSeconds = integerParam(query, "sinceSeconds", 1);
  const sinceTime = query.get("sinceTime");
  if (sinceSeconds !== undefined && sinceTime !== null)
    throw new LogQueryError("at most one of sinceTime or sinceSeconds may be specified");
  let sinceNs: bigint | undefined;
  if (sinceSeconds !== undefined) sinceNs = now - BigInt(sinceSeconds) * 1_000_000_000n;
  if (sinceTime !== null) {
    const ms = Date.parse(sinceTime);
    if (Number.isNaN(ms)) throw new LogQueryError(`sinceTime=${sinceTime} is not an RFC 3339 time`);
    sinceNs = BigInt(ms) * 1_000_000n;
  }
  const tailLines = integerParam(query, "tailLines", 0);
  const limitBytes = integerParam(query, "limitBytes", 1);
  return {
    follow: booleanParam(query, "follow"),
    previous: booleanParam(query, "previous"),
    timestamps: booleanParam(query, "timestamps"),
    ...(sinceNs === undefined ? {} : { sinceNs }),
    ...(tailLines === undefined ? {} : { tailLines }),
    ...(limitBytes === undefined ? {} : { limitBytes }),
  };
}

export interface FollowControl {
  /** Whether the log may still grow (the container's run is still going). */
  stillWriting(): boolean;
  follow: boolean;
}

/** Writes with limitBytes honoured; false once the limit is reached or the client left. */
function limitedWriter(out: Writable, limitBytes: number | undefined) {
  let left = limitBytes ?? Number.POSITIVE_INFINITY;
  return async (chunk: Buffer): Promise<boolean> => {
    if (out.destroyed || out.writableEnded) return false;
    if (left <= 0) return false;
    const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
    left -= part.length;
    if (part.length > 0 && !out.write(part)) await new Promise((resolve) => out.once("drain", resolve));
    return left > 0 && !out.destroyed;
  };
}

const pollMs = 100;

export async function followLog(
  file: string,
  query: ContainerLogQuery,
  out: Writable,
  control: FollowControl,
): Promise<void> {
  const write = limitedWriter(out, query.limitBytes);
  const timestamps = query.timestamps === true;
  let { entries, next } = readEntries(file);
  if (query.fromEnd === true) entries = [];
  const lines = selectLines(joinLines(entries), query);
  const midLine = new Set<LogStream>();
  for (const line of lines) if (!(await write(renderLine(line, timestamps)))) return;
  // A trailing partial line continues in the entries that follow.
  const lastOpen = entries.length > 0 ? openStreams(entries) : [];
  for (const stream of lastOpen) midLine.add(stream);
  if (!control.follow) return;
  let closing = false;
  for (;;) {
    if (out.destroyed || out.writableEnded) return;
    const more = readEntries(file, next);
    next = more.next;
    for (const entry of more.entries) {
      const prefix = timestamps && !midLine.has(entry.stream) ? `${formatTimestamp(entry.time)} ` : "";
      const chunk = Buffer.concat([Buffer.from(prefix), entry.content, Buffer.from(entry.full ? "\n" : "")]);
      if (entry.full) midLine.delete(entry.stream);
      else midLine.add(entry.stream);
      if (!(await write(chunk))) return;
    }
    if (closing) return;
    // One more read after the run ended: its last output may still be on its way into the file.
    if (!control.stillWriting()) closing = true;
    await sleep(closing ? 3 * pollMs : pollMs);
  }
}

function openStreams(entries: LogEntry[]): LogStream[] {
  const open = new Set<LogStream>();
  for (const entry of entries) {
    if (entry.full) open.delete(entry.stream);
    else open.add(entry.stream);
  }
  return [...open];
}
