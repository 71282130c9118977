// The agent's side of native/fanotify-helper.c: a child process that answers fanotify
// pre-content permission events itself and streams completed write ranges over a pipe. The
// answering stays out of Node (a garbage collection pause, a long hash, or a stopped agent
// never stall a writer); the agent only reads records, asks for marks, and holds writes for a
// cut. A watchdog kills a helper that stops answering heartbeats: the kernel then allows every
// pending event, so a stuck helper releases its writers too.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { constants } from "node:os";
import { packageRoot } from "../../util/package-root.js";

export const helperPath = join(packageRoot, "native", "build", "Release", "ksr-fanotify-helper");

/** A record from the helper about one file (by inode number, as a decimal string like BigIntStats.ino). */
export type RangeRecord =
  | { kind: "write"; ino: string; offset: number; count: number }
  | { kind: "whole"; ino: string }
  | { kind: "truncate"; ino: string; offset: number }
  | { kind: "access"; pid: number; device: string; ino: string; offset: number; count: number };

export interface ListenerEvents {
  /** A record about one file. */
  record(record: RangeRecord): void;
  /** Records were lost (the agent did not keep up, or the kernel queue overflowed): verify everything. */
  lost(): void;
  /** The helper is gone (exited, or killed by the watchdog); the capture must fall back. */
  failed(reason: string): void;
}

/** Why fanotify is unavailable, in words an operator can act on. */
function initProblem(errno: number): string {
  if (errno === constants.errno.EPERM)
    return "fanotify_init(FAN_CLASS_PRE_CONTENT) was refused (EPERM): the agent needs CAP_SYS_ADMIN";
  if (errno === constants.errno.EINVAL)
    return "fanotify_init(FAN_CLASS_PRE_CONTENT) was refused (EINVAL): the kernel has no pre-content events (Linux 6.14 or newer is needed)";
  if (errno === constants.errno.ENOSYS) return "the kernel has no fanotify (ENOSYS)";
  return `fanotify_init(FAN_CLASS_PRE_CONTENT) failed with errno ${errno}`;
}

export function markProblem(path: string, errno: number): string {
  const name =
    errno === constants.errno.EOPNOTSUPP
      ? "EOPNOTSUPP"
      : (Object.entries(constants.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`);
  if (errno === constants.errno.EOPNOTSUPP || errno === constants.errno.EINVAL)
    return `the filesystem of ${path} refuses pre-content marks (${name}); write ranges need ext4, xfs or btrfs`;
  return `fanotify_mark on ${path} failed (${name})`;
}

export interface HoldResult {
  /** Every write answered before the hold had landed and was reported before this answer. */
  quiet: boolean;
  waitedMs: number;
}

export interface ReleaseResult {
  heldMs: number;
  /** The hold ended before the release (its limit, a full queue): writes were not held throughout. */
  expired: boolean;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

const heartbeatMs = 250;

export class FanotifyListener {
  private buffered = "";
  private readonly markWaiters = new Map<number, Waiter<number>>();
  private nextMark = 1;
  private holdWaiters: Waiter<HoldResult>[] = [];
  private releaseWaiters: Waiter<ReleaseResult>[] = [];
  private syncWaiters: (() => void)[] = [];
  private expiredSinceHold = false;
  private heartbeat: NodeJS.Timeout | undefined;
  /** When the unanswered heartbeat was sent. */
  private pingSentAt: number | undefined;
  private closed = false;
  private failure: string | undefined;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly events: ListenerEvents,
    private readonly watchdogMs: number,
  ) {}

  /**
   * Starts the helper; rejects with the reason write ranges are unavailable (no helper built,
   * no capability, an old kernel). `watchdogMs`: a helper that answers no heartbeat this long is
   * killed.
   */
  static async start(events: ListenerEvents, watchdogMs: number): Promise<FanotifyListener> {
    if (!existsSync(helperPath))
      throw new Error(`the fanotify helper ${helperPath} is not built (npm ci builds it; it needs a C compiler)`);
    const child = spawn(helperPath, [], { stdio: ["pipe", "pipe", "pipe"] });
    const listener = new FanotifyListener(child, events, watchdogMs);
    await listener.ready();
    return listener;
  }

  private ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      let stderr = "";
      this.child.stderr.setEncoding("utf8");
      this.child.stderr.on("data", (text: string) => {
        stderr = (stderr + text).slice(-2000);
      });
      const onStartLine = (line: string): boolean => {
        if (line === "ready") {
          this.startHeartbeat();
          resolve();
          return true;
        }
        const init = /^e init (\d+)$/.exec(line);
        if (init !== null) {
          reject(new Error(initProblem(Number(init[1]))));
          return true;
        }
        return false;
      };
      let started = false;
      this.child.stdout.setEncoding("utf8");
      this.child.stdout.on("data", (text: string) => {
        this.buffered += text;
        let newline;
        while ((newline = this.buffered.indexOf("\n")) >= 0) {
          const line = this.buffered.slice(0, newline);
          this.buffered = this.buffered.slice(newline + 1);
          if (!started) started = onStartLine(line);
          else this.onLine(line);
        }
      });
      this.child.on("error", (error) => {
        reject(error);
        this.fail(`the fanotify helper failed: ${error.message}`);
      });
      this.child.on("exit", (code, signal) => {
        const why = `the fanotify helper exited (${signal ?? `code ${code}`})${stderr === "" ? "" : `: ${stderr.trim()}`}`;
        reject(new Error(why));
        this.fail(why);
      });
      this.child.stdin.on("error", () => undefined); // reported through "exit"
    });
  }

  private startHeartbeat(): void {
    let lastTick = Date.now();
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      // A late tick means this process was not running (stopped, or a long pause): the helper's
      // answer may be waiting unread, so the wait starts over rather than blaming the helper.
      if (now - lastTick > 4 * heartbeatMs) this.pingSentAt = undefined;
      lastTick = now;
      if (this.pingSentAt !== undefined && now - this.pingSentAt > this.watchdogMs) {
        // Killing it closes its fanotify descriptor: the kernel allows every pending event.
        this.child.kill("SIGKILL");
        this.fail(`the fanotify helper answered no heartbeat for ${this.watchdogMs} ms and was killed`);
        return;
      }
      if (this.pingSentAt === undefined) {
        this.pingSentAt = now;
        this.send("P");
      }
    }, heartbeatMs);
    this.heartbeat.unref();
  }

  private fail(reason: string): void {
    if (this.failure !== undefined) return;
    this.failure = reason;
    clearInterval(this.heartbeat);
    const error = new Error(reason);
    for (const waiter of this.markWaiters.values()) waiter.reject(error);
    this.markWaiters.clear();
    for (const waiter of this.holdWaiters) waiter.reject(error);
    for (const waiter of this.releaseWaiters) waiter.reject(error);
    this.holdWaiters = [];
    this.releaseWaiters = [];
    if (!this.closed) this.events.failed(reason);
  }

  get failed(): string | undefined {
    return this.failure;
  }

  private send(command: string): void {
    if (this.failure !== undefined || this.closed) return;
    this.child.stdin.write(`${command}\0`);
  }

  private onLine(line: string): void {
    const fields = line.split(" ");
    switch (fields[0]) {
      case "w":
        this.events.record({
          kind: "write",
          ino: fields[1] ?? "",
          offset: Number(fields[2]),
          count: Number(fields[3]),
        });
        return;
      case "d":
        this.events.record({ kind: "whole", ino: fields[1] ?? "" });
        return;
      case "t":
        this.events.record({ kind: "truncate", ino: fields[1] ?? "", offset: Number(fields[2]) });
        return;
      case "a":
        this.events.record({
          kind: "access",
          pid: Number(fields[1]),
          device: fields[2] ?? "",
          ino: fields[3] ?? "",
          offset: Number(fields[4]),
          count: Number(fields[5]),
        });
        return;
      case "o":
        this.events.lost();
        return;
      case "p":
        this.pingSentAt = undefined;
        for (const wake of this.syncWaiters.splice(0)) wake();
        return;
      case "m": {
        const id = Number(fields[1]);
        this.markWaiters.get(id)?.resolve(Number(fields[2]));
        this.markWaiters.delete(id);
        return;
      }
      case "h":
        this.holdWaiters.shift()?.resolve({ quiet: fields[1] === "1", waitedMs: Number(fields[2]) / 1000 });
        return;
      case "x":
        this.expiredSinceHold = true;
        return;
      case "r": {
        const expired = fields[2] === "1" || this.expiredSinceHold;
        this.releaseWaiters.shift()?.resolve({ heldMs: Number(fields[1]) / 1000, expired });
        return;
      }
      default:
        return;
    }
  }

  /** Resolves once the helper has answered a heartbeat sent now: every record it had read by then was delivered. */
  sync(): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(new Error(this.failure));
    return new Promise((resolve) => {
      this.syncWaiters.push(resolve);
      this.send("P");
    });
  }

  /** Marks a directory (events on its children); resolves with 0 or the errno of fanotify_mark. */
  mark(directory: string): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(new Error(this.failure));
    const id = this.nextMark++;
    return new Promise((resolve, reject) => {
      this.markWaiters.set(id, { resolve, reject });
      this.send(`M${id} ${directory}`);
    });
  }

  /**
   * Delays the answers to new write events for at most limitMs (the helper lets go on its own
   * then) and resolves once the writes already allowed have landed and been reported.
   */
  hold(limitMs: number): Promise<HoldResult> {
    if (this.failure !== undefined) return Promise.reject(new Error(this.failure));
    this.expiredSinceHold = false;
    return new Promise((resolve, reject) => {
      this.holdWaiters.push({ resolve, reject });
      this.send(`H${Math.max(1, Math.round(limitMs))}`);
    });
  }

  /** Answers every held event. */
  release(): Promise<ReleaseResult> {
    if (this.failure !== undefined) return Promise.reject(new Error(this.failure));
    return new Promise((resolve, reject) => {
      this.releaseWaiters.push({ resolve, reject });
      this.send("R");
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    this.child.stdin.end(); // the helper exits when its stdin closes
    const killer = setTimeout(() => this.child.kill("SIGKILL"), 2000);
    killer.unref();
    this.child.once("exit", () => {
      clearTimeout(killer);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
}
