// Running a command inside a running container for exec (and the attach
// relay): the container's mount, UTS and network namespaces, its root and
// working directory, environment and user, and its cgroup (so the command
// dies with the container). A tty comes from a small python3 pty relay, the
// only pty this machine offers without native modules.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import type { HostTools } from "../runtime.js";
import { ptyRelay, shellQuote } from "../runtime.js";

/** What the node knows of a running container that exec needs. */
export interface ContainerProcess {
  pid: number;
  env: Record<string, string>;
  user?: { uid: number; gid: number };
  cgroup?: string;
  /** The container's own streams, for attach: its stdin pipe (spec.stdin) and its pty's size (spec.tty). */
  attach?: { stdin?: Writable; resize?: Writable; stdinOnce: boolean };
}

export interface TerminalSize {
  Width: number;
  Height: number;
}

/** The client's side of an exec, whatever carries it (SPDY streams here). */
export interface ExecStreams {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  /** Terminal sizes, as the client sends them (JSON objects one after another). */
  resize?: Readable;
  /**
   * Resolves when the client goes away. Its input then ends; a tty is hung
   * up (the pty closes, so the command gets SIGHUP), while a command without
   * one keeps running, as with a container runtime's exec.
   */
  hangUp?: Promise<void>;
}

/** ExecStreams from whichever channels the client opened. */
export function execStreams(
  {
    stdin,
    stdout,
    stderr,
    resize,
  }: Partial<Record<"stdin" | "resize", Readable> & Record<"stdout" | "stderr", Writable>>,
  hangUp: Promise<void>,
): ExecStreams {
  return {
    ...(stdin === undefined ? {} : { stdin }),
    ...(stdout === undefined ? {} : { stdout }),
    ...(stderr === undefined ? {} : { stderr }),
    ...(resize === undefined ? {} : { resize }),
    hangUp,
  };
}

export interface ExecTools extends HostTools {
  python3?: string;
}

/** nsenter into the container, as its user; the command is exec'd, so its pid is the nsenter's. */
export function containerCommand(target: ContainerProcess, argv: string[], tools: HostTools): string[] {
  const user =
    target.user === undefined
      ? []
      : [tools.setpriv, `--reuid=${target.user.uid}`, `--regid=${target.user.gid}`, "--clear-groups", "--"];
  return [
    tools.nsenter,
    `--target=${target.pid}`,
    "--mount",
    "--uts",
    "--net",
    "--root",
    "--wd",
    "--",
    ...user,
    ...argv,
  ];
}

/** Joins the container's cgroup first (so the command is killed with it), then execs the command. */
function inCgroup(target: ContainerProcess, command: string[]): string[] {
  if (target.cgroup === undefined) return command;
  const procs = shellQuote(`${target.cgroup}/cgroup.procs`);
  return ["/bin/sh", "-c", `echo $$ > ${procs} 2>/dev/null; exec "$@"`, "sh", ...command];
}

/** Parses the resize stream's concatenated JSON objects. */
export class ResizeDecoder {
  private buffered = "";

  push(chunk: string): TerminalSize[] {
    this.buffered += chunk;
    const sizes: TerminalSize[] = [];
    let depth = 0;
    let start = -1;
    let consumed = 0;
    for (let i = 0; i < this.buffered.length; i++) {
      const c = this.buffered[i];
      if (c === "{") {
        if (depth === 0) start = i;
        depth++;
      } else if (c === "}" && depth > 0) {
        depth--;
        if (depth === 0) {
          const size = parseSize(this.buffered.slice(start, i + 1));
          if (size !== undefined) sizes.push(size);
          consumed = i + 1;
        }
      }
    }
    this.buffered = this.buffered.slice(consumed);
    if (this.buffered.length > 4096) this.buffered = ""; // not a size object: drop it rather than grow
    return sizes;
  }
}

/** The client's resize messages as the pty relay's "cols rows" lines. */
export function forwardResizes(from: Readable, to: Writable): void {
  const decoder = new ResizeDecoder();
  from.on("data", (chunk: Buffer) => {
    for (const size of decoder.push(chunk.toString("utf8")))
      if (!to.writableEnded && !to.destroyed) to.write(`${size.Width} ${size.Height}\n`);
  });
}

function parseSize(text: string): TerminalSize | undefined {
  try {
    const value = JSON.parse(text) as Partial<TerminalSize>;
    const ok = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffff;
    return ok(value.Width) && ok(value.Height) ? { Width: value.Width, Height: value.Height } : undefined;
  } catch {
    return undefined;
  }
}

/** How long an exec with a tty waits for the client's first terminal size before its command starts. */
const firstSizeWaitSeconds = "2";

export interface ExecOutcome {
  exitCode: number;
}

/**
 * Runs argv in the container with the client's streams attached; resolves
 * with the exit code once the command ended and its output was delivered.
 */
export function runInContainer(
  target: ContainerProcess,
  argv: string[],
  streams: ExecStreams,
  tty: boolean,
  tools: ExecTools,
): Promise<ExecOutcome> {
  const command = inCgroup(target, containerCommand(target, argv, tools));
  const env = { ...target.env, ...(tty && target.env.TERM === undefined ? { TERM: "xterm" } : {}) };
  if (tty && tools.python3 === undefined)
    return Promise.reject(new Error("a tty needs python3 on the node (apt-get install python3)"));
  const firstSizeWait = streams.resize === undefined ? "0" : firstSizeWaitSeconds;
  const [file, args] = tty
    ? [tools.python3 ?? "", ["-c", ptyRelay, firstSizeWait, ...command]]
    : [command[0] ?? "", command.slice(1)];
  const child = spawn(file, args, {
    env,
    stdio: ["pipe", "pipe", "pipe", tty ? "pipe" : "ignore"],
    detached: true,
  });
  const resizes = child.stdio[3] as Writable | null;
  const { stdin, stdout, stderr } = child as unknown as { stdin: Writable; stdout: Readable; stderr: Readable };
  if (streams.stdin !== undefined) {
    streams.stdin.pipe(stdin);
    streams.stdin.on("error", () => stdin.end());
  } else stdin.end();
  stdin.on("error", () => undefined); // the command may exit without reading its input
  if (streams.stdout !== undefined) stdout.pipe(streams.stdout, { end: false });
  else stdout.resume();
  if (streams.stderr !== undefined) stderr.pipe(streams.stderr, { end: false });
  else stderr.resume();
  if (tty && streams.resize !== undefined && resizes !== null) {
    resizes.on("error", () => undefined);
    forwardResizes(streams.resize, resizes);
  }
  void streams.hangUp?.then(() => {
    stdin.end();
    if (tty && child.exitCode === null) child.kill("SIGTERM");
  });
  return new Promise((resolve, reject) => {
    let exitCode: number | undefined;
    const outputs = [stdout, stderr];
    let open = outputs.length;
    const finish = () => {
      if (exitCode === undefined || open > 0) return;
      streams.stdin?.unpipe(stdin);
      resolve({ exitCode });
    };
    for (const output of outputs)
      output.on("close", () => {
        open--;
        finish();
      });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      exitCode = signal !== null ? 128 + constants.signals[signal] : (code ?? 126);
      // A background process may keep the output open: deliver what came within a second, then stop waiting.
      setTimeout(() => {
        for (const output of outputs) output.destroy();
      }, 1000).unref();
      finish();
    });
  });
}

/** The v4 error-stream status the kubelet writes when a command ends. */
export function exitStatus(exitCode: number): Record<string, unknown> {
  if (exitCode === 0) return { metadata: {}, status: "Success" };
  return {
    metadata: {},
    status: "Failure",
    message: `command terminated with non-zero exit code: command exited with ${exitCode}`,
    reason: "NonZeroExitCode",
    details: { causes: [{ reason: "ExitCode", message: String(exitCode) }] },
  };
}

/** An internal error as a v4 status (the command could not be run at all). */
export function errorStatus(message: string): Record<string, unknown> {
  return { metadata: {}, status: "Failure", message, reason: "InternalError", code: 500 };
}
