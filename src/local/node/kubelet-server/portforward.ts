// Port-forward (portforward.k8s.io) over SPDY, as the kubelet serves it: each
// forwarded connection is a pair of streams with the same `requestID` header,
// `streamType` error and data, and the pod's `port`. The data stream is
// joined to a TCP connection to localhost:PORT inside the pod's network
// namespace (through a small relay started with nsenter, since a process
// cannot open a socket in another namespace without entering it); a failure
// to connect is written on the error stream.
import { spawn } from "node:child_process";
import { connect } from "node:net";
import { Duplex } from "node:stream";
import type { SpdyStream } from "./spdy.js";

export const portForwardProtocols = ["portforward.k8s.io"];

/** Where the pod's ports are: its network namespace, or an address in the node's (no namespaces here). */
export type PortForwardTarget = { netns: string } | { host: string };

/** Connects stdin/stdout to 127.0.0.1:PORT; says why on stderr and exits 1 if it cannot. */
const relay = `const s = require("net").connect(Number(process.argv[1]), "127.0.0.1");
s.on("error", (e) => { process.stderr.write(e.message); process.exit(1); });
s.on("connect", () => { process.stdin.pipe(s); s.pipe(process.stdout); });`;

export function parsePort(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,5}$/.test(value)) return undefined;
  const port = Number(value);
  return port >= 1 && port <= 65535 ? port : undefined;
}

interface Pair {
  error?: SpdyStream;
  data?: SpdyStream;
}

export interface PortForwardContext {
  target: PortForwardTarget;
  nsenter: string;
  nodeBinary: string;
  /** For error messages: namespace/name and uid. */
  pod: string;
  uid: string;
}

/** Accepts the client's stream pairs and forwards each data stream once its error stream is there too. */
export function portForwarder(context: PortForwardContext): (stream: SpdyStream) => boolean {
  const pairs = new Map<string, Pair>();
  return (stream) => {
    const port = parsePort(stream.header("port"));
    const type = stream.header("streamtype");
    if (port === undefined || (type !== "error" && type !== "data")) return false;
    // Clients older than request IDs pair streams by consecutive ids (error first, as kubectl opens them).
    const requestID = stream.header("requestid") ?? String(type === "error" ? stream.id : stream.id - 2);
    const pair = pairs.get(requestID) ?? {};
    pair[type] = stream;
    pairs.set(requestID, pair);
    stream.on("error", () => undefined);
    if (pair.error !== undefined && pair.data !== undefined) {
      pairs.delete(requestID);
      forward(pair.data, pair.error, port, context);
    }
    return true;
  };
}

function open(
  target: PortForwardTarget,
  port: number,
  context: PortForwardContext,
): { socket: Duplex; failed: Promise<string> } {
  if ("host" in target) {
    const socket = connect({ host: target.host, port });
    const failed = new Promise<string>((resolve) =>
      socket.once("error", (error) => {
        resolve(error.message);
      }),
    );
    return { socket, failed };
  }
  const child = spawn(context.nsenter, [`--net=${target.netns}`, "--", context.nodeBinary, "-e", relay, String(port)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.on("error", () => undefined);
  const failed = new Promise<string>((resolve) =>
    child.on("exit", (code) => {
      if (code !== 0) resolve(stderr.trim() || `relay exited with ${code}`);
    }),
  );
  const socket = Duplex.from({ readable: child.stdout, writable: child.stdin });
  socket.on("close", () => child.kill());
  return { socket, failed };
}

function forward(data: SpdyStream, error: SpdyStream, port: number, context: PortForwardContext): void {
  const { socket, failed } = open(context.target, port, context);
  socket.on("error", () => undefined);
  data.pipe(socket);
  socket.pipe(data);
  void failed.then((reason) => {
    if (error.destroyed) return;
    error.end(`error forwarding port ${port} to pod ${context.pod}, uid ${context.uid}: ${reason}`);
    data.reset();
  });
  const done = () => {
    if (!error.destroyed && !error.writableEnded) error.end();
  };
  data.on("close", () => {
    socket.destroy();
    done();
  });
}
