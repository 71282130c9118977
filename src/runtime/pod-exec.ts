// `pods/exec` over a WebSocket, as kubectl exec speaks it since Kubernetes 1.30: the API server
// answers the upgrade with v5.channel.k8s.io (or v4), every binary message starts with its
// channel (1 stdout, 2 stderr, 3 the final Status, 255 a stream closed), and the command's exit
// code arrives as a Status on channel 3. Only what a quiesce hook needs: no stdin, no TTY.
import { randomBytes } from "node:crypto";
import type { OutgoingHttpHeaders } from "node:http";
import { request, type RequestOptions } from "node:https";
import type { Socket } from "node:net";

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

const opcodes = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;
const channels = { stdout: 1, stderr: 2, status: 3, close: 255 } as const;

/** A client's frame: always masked (RFC 6455 §5.3). */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const length = payload.length;
  const header =
    length < 126
      ? Buffer.from([0x80 | opcode, 0x80 | length])
      : Buffer.from([0x80 | opcode, 0x80 | 126, length >> 8, length & 0xff]);
  const masked = Buffer.from(payload.map((byte, index) => byte ^ (mask[index % 4] ?? 0)));
  return Buffer.concat([header, mask, masked]);
}

/** Splits the server's (unmasked) frames into whole messages. */
class ServerFrames {
  private pending: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];

  constructor(
    private readonly onMessage: (message: Buffer) => void,
    private readonly onControl: (opcode: number, payload: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    for (;;) {
      if (this.pending.length < 2) return;
      const first = this.pending[0] ?? 0;
      const second = this.pending[1] ?? 0;
      if ((second & 0x80) !== 0) throw new ExecError("the API server sent a masked WebSocket frame");
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.pending.length < 4) return;
        length = this.pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.pending.length < 10) return;
        length = Number(this.pending.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.pending.length < offset + length) return;
      const payload = this.pending.subarray(offset, offset + length);
      this.pending = this.pending.subarray(offset + length);
      const opcode = first & 0x0f;
      if (opcode >= opcodes.close) {
        this.onControl(opcode, payload);
        continue;
      }
      this.fragments.push(Buffer.from(payload));
      if ((first & 0x80) === 0) continue;
      const message = Buffer.concat(this.fragments);
      this.fragments = [];
      this.onMessage(message);
    }
  }
}

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
      const frames = new ServerFrames(
        (message) => {
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
        },
        (opcode, payload) => {
          if (opcode === opcodes.ping) upgraded.write(clientFrame(opcodes.pong, payload));
          else if (opcode === opcodes.close) {
            upgraded.end(clientFrame(opcodes.close, payload.subarray(0, 2)));
            ended();
          }
        },
      );
      upgraded.on("data", (chunk: Buffer) => {
        try {
          frames.push(chunk);
        } catch (error) {
          finish(error as Error);
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
