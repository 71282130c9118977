// `pods/exec` over a WebSocket, as kubectl exec speaks it since Kubernetes 1.30: the API server
// answers the upgrade with v5.channel.k8s.io (or v4), every binary message starts with its
// channel (1 stdout, 2 stderr, 3 the final Status, 255 a stream closed), and the command's exit
// code arrives as a Status on channel 3. Only what a quiesce hook needs: no stdin, no TTY.
import { randomBytes } from "node:crypto";
import type { OutgoingHttpHeaders } from "node:http";
import { request, type RequestOptions } from "node:https";
import type { Socket } from "node:net";
import { encodeFrame, MessageReader, opcode } from "../util/websocket-frames.js";

export const execProtocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"] as const;

export interface ExecTarget {
  namespace: string;
  pod: string;
  container: string;
}

export interface ExecResult {
  /** The command's exit code (0 on success). */
  exitCode: number;
  /** The tails of its output, at most outputTailBytes each. */
  stdout: string;
  stderr: string;
}

/** The command could not be run or did not finish: refused, unreachable, timed out, cut off. */
export class ExecError extends Error {
  override readonly name = "ExecError";
}

export const outputTailBytes = 4096;

const channels = { stdout: 1, stderr: 2, status: 3, close: 255 } as const;

/** A client's frame: always masked (RFC 6455 §5.3). */
const clientFrame = (frameOpcode: number, payload: Buffer) =>
  encodeFrame(frameOpcode, payload, { mask: randomBytes(4) });

interface Status {
  status?: string;
  message?: string;
  reason?: string;
  details?: { causes?: { reason?: string; message?: string }[] };
}

/** The exit code a v4/v5 Status reports, or the reason the command did not run. */
export function exitCodeOf(status: Status): number | ExecError {
  if (status.status === "Success") return 0;
  const cause = status.details?.causes?.find((c) => c.reason === "ExitCode");
  const code = cause?.message === undefined ? NaN : Number(cause.message);
  if (status.reason === "NonZeroExitCode" && Number.isInteger(code)) return code;
  return new ExecError(status.message ?? `the command failed (${status.reason ?? "no reason given"})`);
}

function appendTail(tail: Buffer, data: Buffer): Buffer {
  const joined = Buffer.concat([tail, data]);
  return joined.length <= outputTailBytes ? joined : joined.subarray(joined.length - outputTailBytes);
}

/**
 * Runs the exec request (options carry the credentials and the path with its query) and resolves
 * with the exit code once the command ended. Rejects with ExecError when it could not run or did
 * not end within timeoutMs (the connection is then closed, which ends the command's streams).
 */
export function runExec(options: RequestOptions, timeoutMs: number, signal?: AbortSignal): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let socket: Socket | undefined;
    let done = false;
    const finish = (outcome: ExecResult | Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket?.destroy();
      req.destroy();
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish(new ExecError(`did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = (): void => {
      finish(new ExecError("aborted: this process no longer acts (shut down or lost leadership)"));
    };
    signal?.addEventListener("abort", onAbort);
    const req = request({
      ...options,
      headers: {
        // The credentials' headers (Authorization and the like) are always an object here.
        ...(options.headers as OutgoingHttpHeaders | undefined),
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": randomBytes(16).toString("base64"),
        "sec-websocket-protocol": execProtocols.join(", "),
      },
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        let message = body.slice(0, 500);
        try {
          message = (JSON.parse(body) as Status).message ?? message;
        } catch {
          // not a Status: the raw text is the best message there is
        }
        finish(new ExecError(`the API server refused the exec: ${res.statusCode ?? 0} ${message}`.trim()));
      });
    });
    req.on("upgrade", (res, upgraded, head) => {
      socket = upgraded;
      const protocol = res.headers["sec-websocket-protocol"];
      if (!execProtocols.some((p) => p === protocol)) {
        finish(new ExecError(`the API server chose no exec protocol we speak (${protocol ?? "none"})`));
        return;
      }
      let stdout: Buffer = Buffer.alloc(0);
      let stderr: Buffer = Buffer.alloc(0);
      let exit: number | ExecError | undefined;
      const ended = (): void => {
        if (exit === undefined) finish(new ExecError("the stream ended before the command's exit status"));
        else if (exit instanceof ExecError) finish(exit);
        else finish({ exitCode: exit, stdout: stdout.toString("utf8"), stderr: stderr.toString("utf8") });
      };
      const onMessage = (message: Buffer): void => {
        const channel = message[0];
        const data = message.subarray(1);
        if (channel === channels.stdout) stdout = appendTail(stdout, data);
        else if (channel === channels.stderr) stderr = appendTail(stderr, data);
        else if (channel === channels.status) {
          try {
            exit = exitCodeOf(JSON.parse(data.toString("utf8")) as Status);
          } catch {
            exit = new ExecError(`unreadable exit status: ${data.toString("utf8").slice(0, 200)}`);
          }
        }
      };
      const reader = new MessageReader("server");
      upgraded.on("data", (chunk: Buffer) => {
        try {
          for (const event of reader.push(chunk)) {
            if (event.kind === "message") onMessage(event.data);
            else if (event.opcode === opcode.ping) upgraded.write(clientFrame(opcode.pong, event.payload));
            else if (event.opcode === opcode.close) {
              upgraded.end(clientFrame(opcode.close, event.payload.subarray(0, 2)));
              ended();
            }
          }
        } catch (error) {
          finish(new ExecError(`the API server broke the WebSocket protocol: ${(error as Error).message}`));
        }
      });
      upgraded.on("close", ended);
      upgraded.on("error", (error) => {
        finish(new ExecError(`connection failed: ${error.message}`));
      });
      if (head.length > 0) upgraded.emit("data", head);
    });
    req.on("error", (error) => {
      finish(new ExecError(`connection failed: ${error.message}`));
    });
    req.end();
  });
}
