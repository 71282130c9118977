// The remote-command protocol (v4.channel.k8s.io) over SPDY, as the kubelet
// serves exec: the client opens one stream per channel, each named by its
// `streamType` header (error, stdin, stdout, stderr, resize); once all the
// request asked for are open the command runs, and its end is reported as a
// JSON metav1.Status on the error stream, non-zero exit codes included.
import type { Writable } from "node:stream";
import type { SpdySession, SpdyStream } from "./spdy.js";
import {
  errorStatus,
  execStreams,
  exitStatus,
  forwardResizes,
  runInContainer,
  type ContainerProcess,
  type ExecStreams,
  type ExecTools,
} from "./exec.js";

export const remoteCommandProtocols = ["v4.channel.k8s.io"];
/** How long the client has to open its streams (the kubelet's default stream creation timeout). */
export const streamCreationTimeoutMs = 30_000;

export interface StreamOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

/** Reads stdin/stdout/stderr/tty ("1" or "true") from the query; a tty has no separate stderr. */
export function streamOptions(query: URLSearchParams): StreamOptions {
  const flag = (name: string) => query.get(name) === "1" || query.get(name) === "true";
  const tty = flag("tty");
  const options = {
    stdin: flag("input") || flag("stdin"),
    stdout: flag("output") || flag("stdout"),
    stderr: flag("error") || flag("stderr"),
    tty,
  };
  if (tty) options.stderr = false;
  if (!options.stdin && !options.stdout && !options.stderr)
    throw new Error("you must specify at least 1 of stdin, stdout, stderr");
  return options;
}

/** The first protocol of the client's list this server speaks (httpstream.Handshake's rule). */
export function negotiateProtocol(offered: string[], supported: readonly string[]): string | undefined {
  return offered.find((protocol) => supported.includes(protocol));
}

/** Values of a possibly repeated, possibly comma-joined header. */
export function headerValues(value: string | string[] | undefined): string[] {
  const values = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return values
    .flatMap((v) => v.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "");
}

const streamTypes = ["error", "stdin", "stdout", "stderr", "resize"] as const;
type StreamType = (typeof streamTypes)[number];

/** Collects the client's streams as they open; ready() resolves once the expected ones are there. */
export class RemoteCommandStreams {
  readonly streams = new Map<StreamType, SpdyStream>();
  private waiter: (() => void) | undefined;

  constructor(private readonly options: StreamOptions) {}

  private get expected(): number {
    const o = this.options;
    return 1 + Number(o.stdin) + Number(o.stdout) + Number(o.stderr) + Number(o.tty);
  }

  accept = (stream: SpdyStream): boolean => {
    const type = stream.header("streamtype");
    if (type === undefined || !(streamTypes as readonly string[]).includes(type)) return false;
    stream.on("error", () => undefined);
    this.streams.set(type as StreamType, stream);
    if (this.streams.size >= this.expected) this.waiter?.();
    return true;
  };

  ready(timeoutMs = streamCreationTimeoutMs): Promise<void> {
    if (this.streams.size >= this.expected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error("timed out waiting for client to create streams"));
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  get(type: StreamType): SpdyStream | undefined {
    return this.streams.get(type);
  }
}

function endStream(stream: Writable | undefined): Promise<void> {
  if (stream === undefined || stream.destroyed || stream.writableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    stream.end(resolve);
  });
}

/** One exec's or attach's connection to the client, whatever carries it. */
export interface RemoteCommandTransport {
  /** Resolves once the client opened what it asked for; rejects on timeout. */
  ready(): Promise<void>;
  streams(): ExecStreams;
  /** Reports the outcome on the error channel and closes the connection. */
  finish(status: Record<string, unknown>): Promise<void>;
  /** Resolves when the connection is gone. */
  readonly closed: Promise<void>;
  /** Closes without a status (the client never finished opening its streams). */
  abort(): void;
}

/** The SPDY transport: one stream per channel, GOAWAY at the end. */
export function spdyTransport(session: SpdySession, collected: RemoteCommandStreams): RemoteCommandTransport {
  const closed = new Promise<void>((resolve) => {
    session.onClose(resolve);
  });
  return {
    ready: () => collected.ready(),
    streams: () =>
      execStreams(
        {
          stdin: collected.get("stdin"),
          stdout: collected.get("stdout"),
          stderr: collected.get("stderr"),
          resize: collected.get("resize"),
        },
        closed,
      ),
    async finish(status) {
      await Promise.all([endStream(collected.get("stdout")), endStream(collected.get("stderr"))]);
      const error = collected.get("error");
      if (error !== undefined && !error.destroyed) {
        error.write(JSON.stringify(status));
        await endStream(error);
      }
      session.close();
    },
    closed,
    abort: () => {
      session.close();
    },
  };
}

/** Serves one exec once the client's connection is up. */
export async function serveExec(
  transport: RemoteCommandTransport,
  target: ContainerProcess,
  argv: string[],
  options: StreamOptions,
  tools: ExecTools,
): Promise<number | undefined> {
  try {
    await transport.ready();
  } catch {
    transport.abort();
    return undefined;
  }
  const { stdin, ...rest } = transport.streams();
  try {
    const { exitCode } = await runInContainer(
      target,
      argv,
      { ...rest, ...(options.stdin && stdin !== undefined ? { stdin } : {}) },
      options.tty,
      tools,
    );
    await transport.finish(exitStatus(exitCode));
    return exitCode;
  } catch (error) {
    await transport.finish(errorStatus(`error executing command in container: ${(error as Error).message}`));
    return undefined;
  }
}

/**
 * Attach: the container's output from now on, until it ends or the client
 * leaves; with stdin, what the client types goes to the container's own
 * standard input (spec.stdin), and with a tty, resizes to its pty. A container
 * with stdinOnce gets end-of-file when the first attached client's input ends
 * or it leaves, as the kubelet's runtimes do; otherwise its input stays open
 * for the next attach. Input to a container without stdin is dropped.
 */
export async function serveAttach(
  transport: RemoteCommandTransport,
  follow: (out: Writable, stop: Promise<void>) => Promise<void>,
  container: ContainerProcess["attach"],
  options: StreamOptions,
): Promise<void> {
  try {
    await transport.ready();
  } catch {
    transport.abort();
    return;
  }
  const { stdout, stdin, resize } = transport.streams();
  // Output from here on, taken before any input can make the container answer.
  const following = stdout === undefined ? Promise.resolve() : follow(stdout, transport.closed);
  const input = container?.stdin;
  if (options.stdin && stdin !== undefined && input !== undefined && !input.writableEnded) {
    stdin.pipe(input, { end: false });
    let detached = false;
    const detach = () => {
      if (detached) return;
      detached = true;
      stdin.unpipe(input);
      if (container?.stdinOnce === true) input.end();
    };
    stdin.once("end", detach);
    void transport.closed.then(detach);
  } else stdin?.resume();
  if (options.tty && resize !== undefined && container?.resize !== undefined) forwardResizes(resize, container.resize);
  else resize?.resume();
  await following;
  await transport.finish({ metadata: {}, status: "Success" });
}
