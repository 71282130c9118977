// Readiness, liveness and startup probes, run the way the kubelet runs them:
// tcpSocket, httpGet, grpc (grpc.health.v1) and exec, with initial delay,
// period, timeout and success/failure thresholds.
import { request as httpRequest } from "node:http";
import { connect as http2Connect, constants as http2, type IncomingHttpHeaders } from "node:http2";
import { request as httpsRequest } from "node:https";
import { connect } from "node:net";
import type { V1Container, V1Probe } from "@kubernetes/client-node";

export type ProbeOutcome = { ok: true } | { ok: false; message: string };

export interface ProbeTarget {
  podIP: string;
  /** The kubelet's own address to probe from (policy enforcement and site isolation let it through). */
  sourceAddress?: string;
  container: V1Container;
  /** Runs argv inside the container (exec probes). */
  exec(argv: string[], timeoutMs: number): Promise<{ exitCode: number; output: string }>;
}

/** A named port resolves through the container's ports, as in the kubelet. */
export function resolvePort(port: number | string | undefined, container: V1Container): number {
  if (typeof port === "number") return port;
  if (port !== undefined && /^\d+$/.test(port)) return Number(port);
  const named = container.ports?.find((p) => p.name === port);
  if (named === undefined) throw new Error(`probe port "${String(port)}" is not a port of container ${container.name}`);
  return named.containerPort;
}

const from = (sourceAddress: string | undefined) =>
  sourceAddress === undefined ? {} : { localAddress: sourceAddress };

function tcpProbe(host: string, port: number, timeoutMs: number, sourceAddress?: string): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: timeoutMs, ...from(sourceAddress) });
    socket.once("connect", () => {
      socket.destroy();
      resolve({ ok: true });
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve({ ok: false, message: `dial tcp ${host}:${port}: i/o timeout` });
    });
    socket.once("error", (error) => {
      resolve({ ok: false, message: `dial tcp ${host}:${port}: ${error.message}` });
    });
  });
}

function httpProbe(
  probe: NonNullable<V1Probe["httpGet"]>,
  target: ProbeTarget,
  timeoutMs: number,
): Promise<ProbeOutcome> {
  const host = probe.host ?? target.podIP;
  const port = resolvePort(probe.port, target.container);
  const scheme = (probe.scheme ?? "HTTP").toLowerCase();
  const url = `${scheme}://${host}:${port}${probe.path ?? "/"}`;
  const headers: Record<string, string> = { "User-Agent": "kube-probe/ksr-local", Accept: "*/*" };
  for (const header of probe.httpHeaders ?? []) headers[header.name] = header.value;
  const send = scheme === "https" ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const options = { headers, timeout: timeoutMs, rejectUnauthorized: false, ...from(target.sourceAddress) };
    const req = send(url, options, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(
        status >= 200 && status < 400
          ? { ok: true }
          : { ok: false, message: `HTTP probe failed with statuscode: ${status}` },
      );
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) => {
      resolve({ ok: false, message: `Get "${url}": ${error.message}` });
    });
    req.end();
  });
}

/** Encodes grpc.health.v1.HealthCheckRequest{service} as a length-prefixed gRPC message. */
export function healthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service);
  if (name.length > 127) throw new Error("grpc probe service name longer than 127 bytes");
  const body = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, name.length]), name]);
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(body.length, 1);
  return Buffer.concat([frame, body]);
}

/** Reads the status field (1: SERVING) from a length-prefixed HealthCheckResponse; undefined when absent. */
export function healthCheckStatus(frame: Buffer): number | undefined {
  const body = frame.subarray(5, 5 + (frame.length >= 5 ? frame.readUInt32BE(1) : 0));
  return body.length >= 2 && body[0] === 0x08 ? body[1] : body.length === 0 ? 0 : undefined;
}

function grpcProbe(probe: NonNullable<V1Probe["grpc"]>, target: ProbeTarget, timeoutMs: number): Promise<ProbeOutcome> {
  const podIP = target.podIP;
  const authority = `http://${podIP}:${probe.port}`;
  return new Promise((resolve) => {
    const source = target.sourceAddress;
    const session = http2Connect(
      authority,
      source === undefined
        ? {}
        : { createConnection: () => connect({ host: podIP, port: probe.port, localAddress: source }) },
    );
    const finish = (outcome: ProbeOutcome) => {
      clearTimeout(timer);
      session.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      finish({ ok: false, message: `timeout: health rpc did not complete within ${timeoutMs}ms` });
    }, timeoutMs);
    session.on("error", (error: Error) => {
      finish({ ok: false, message: `failed to connect service "${podIP}:${probe.port}": ${error.message}` });
    });
    const stream = session.request({
      [http2.HTTP2_HEADER_METHOD]: "POST",
      [http2.HTTP2_HEADER_PATH]: "/grpc.health.v1.Health/Check",
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    let grpcStatus: string | undefined;
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("trailers", (trailers: IncomingHttpHeaders) => {
      grpcStatus = String(trailers["grpc-status"] ?? "");
    });
    stream.on("response", (headers: IncomingHttpHeaders) => {
      if (headers["grpc-status"] !== undefined) grpcStatus = String(headers["grpc-status"]);
    });
    stream.on("error", (error: Error) => {
      finish({ ok: false, message: error.message });
    });
    stream.on("end", () => {
      const status = healthCheckStatus(Buffer.concat(chunks));
      if (grpcStatus !== "0") finish({ ok: false, message: `health rpc failed with grpc-status ${grpcStatus}` });
      else if (status === 1) finish({ ok: true });
      else
        finish({
          ok: false,
          message: `service unhealthy (responded with "${status === 2 ? "NOT_SERVING" : String(status)}")`,
        });
    });
    stream.end(healthCheckRequest(probe.service ?? ""));
  });
}

/** One probe attempt. */
export async function runProbe(probe: V1Probe, target: ProbeTarget): Promise<ProbeOutcome> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  try {
    if (probe.exec !== undefined) {
      const result = await target.exec(probe.exec.command ?? [], timeoutMs);
      return result.exitCode === 0
        ? { ok: true }
        : { ok: false, message: result.output.trim() || `exit code ${result.exitCode}` };
    }
    if (probe.tcpSocket !== undefined) {
      const port = resolvePort(probe.tcpSocket.port, target.container);
      return await tcpProbe(probe.tcpSocket.host ?? target.podIP, port, timeoutMs, target.sourceAddress);
    }
    if (probe.httpGet !== undefined) return await httpProbe(probe.httpGet, target, timeoutMs);
    if (probe.grpc !== undefined) return await grpcProbe(probe.grpc, target, timeoutMs);
    return { ok: false, message: "probe has no handler (exec, tcpSocket, httpGet or grpc)" };
  } catch (error) {
    return { ok: false, message: (error as Error).message };
  }
}

/**
 * Applies successThreshold/failureThreshold to a stream of attempts; the
 * result flips only after that many consecutive outcomes.
 */
export class ProbeThresholds {
  private successes = 0;
  private failures = 0;

  constructor(
    private readonly probe: V1Probe,
    public result: boolean,
  ) {}

  /** Records an attempt; true when the result changed. */
  record(ok: boolean): boolean {
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (!this.result && this.successes >= (this.probe.successThreshold ?? 1)) return this.flip(true);
    } else {
      this.successes = 0;
      this.failures++;
      if (this.result && this.failures >= (this.probe.failureThreshold ?? 3)) return this.flip(false);
    }
    return false;
  }

  private flip(to: boolean): boolean {
    this.result = to;
    this.successes = 0;
    this.failures = 0;
    return true;
  }
}

export type ProbeKind = "startup" | "readiness" | "liveness";

/** Runs one probe on its period until stopped, reporting result changes. */
export class Prober {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  readonly thresholds: ProbeThresholds;
  /** For startup probes: a success was seen, so the other probes take over. */
  succeeded = false;
  lastMessage = "";

  constructor(
    readonly kind: ProbeKind,
    private readonly probe: V1Probe,
    private readonly target: ProbeTarget,
    private readonly onChange: (prober: Prober) => void,
  ) {
    // Readiness starts failed; liveness and startup start "ok" and must fail failureThreshold times to count.
    this.thresholds = new ProbeThresholds(probe, kind !== "readiness");
  }

  /** Readiness: ready; liveness and startup: not (yet) failed. */
  get result(): boolean {
    return this.thresholds.result;
  }

  start(): void {
    this.schedule((this.probe.initialDelaySeconds ?? 0) * 1000);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.attempt(), delayMs);
  }

  private async attempt(): Promise<void> {
    const outcome = await runProbe(this.probe, this.target);
    if (this.stopped) return;
    this.lastMessage = outcome.ok ? "" : outcome.message;
    if (this.kind === "startup" && outcome.ok) {
      this.succeeded = true;
      this.stop();
      this.onChange(this);
      return;
    }
    if (this.thresholds.record(outcome.ok)) this.onChange(this);
    this.schedule((this.probe.periodSeconds ?? 10) * 1000);
  }
}
