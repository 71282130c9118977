// The kubelet API of one local node: HTTPS with a serving certificate from the
// cluster CA, clients authenticated by certificate and authorised by
// SubjectAccessReview, serving /healthz, /containerLogs, /exec, /attach and
// /portForward the way the kubelet does (the streaming ones over SPDY/3.1,
// which is what kube-apiserver speaks to kubelets; docs/local-node.md).
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Writable } from "node:stream";
import type { V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { podLogDir, type NodeLayout } from "../layout.js";
import { runLogFile } from "../logs.js";
import { forbiddenMessage, identityOf, requestAttributes, type Authorizer, type ClientIdentity } from "./authz.js";
import { type ContainerProcess, type ExecTools } from "./exec.js";
import { followLog, parseLogQuery, LogQueryError } from "./log-endpoint.js";
import { portForwarder, portForwardProtocols, type PortForwardTarget } from "./portforward.js";
import {
  headerValues,
  negotiateProtocol,
  remoteCommandProtocols,
  RemoteCommandStreams,
  serveAttach,
  serveExec,
  spdyTransport,
  streamOptions,
  type RemoteCommandTransport,
  type StreamOptions,
} from "./remotecommand.js";
import { webSocketProtocols, webSocketTransport } from "./channels.js";
import { acceptKey } from "./websocket.js";
import { SpdySession, type StreamHandler } from "./spdy.js";

/** What the server needs of a pod on its node. */
export interface PodHandle {
  readonly object: V1Pod;
  containerProcess(name: string): ContainerProcess | undefined;
  readonly portForwardTarget: PortForwardTarget | undefined;
}

export interface KubeletServerOptions {
  nodeName: string;
  tls: { cert: string; key: string; ca: string };
  authorizer: Authorizer;
  /** The pod of that namespace and name on this node, if any. */
  findPod(namespace: string, name: string): PodHandle | undefined;
  layout: NodeLayout;
  tools: ExecTools;
  nodeBinary: string;
  log: Logger;
  host?: string;
  port?: number;
}

export interface RunningKubeletServer {
  port: number;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Where a reply goes: a normal response, or the raw socket of an upgrade request. */
interface Reply {
  error(status: number, message: string): void;
}

const statusText: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  500: "Internal Server Error",
};

/**
 * A refused upgrade, as a Status: the apiserver's stream client decodes the
 * body as one (YAML accepted), so plain text such as "container c is not
 * valid: it is not running" would reach kubectl as an empty Status
 * ("error stream protocol error: unknown error") instead of the message.
 */
function socketReply(socket: Socket): Reply {
  return {
    error(status, message) {
      const reason = statusText[status] ?? "Error";
      const body = JSON.stringify({
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message,
        reason: status === 500 ? "InternalError" : reason.replace(/ /g, ""),
        code: status,
      });
      socket.end(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    },
  };
}

function responseReply(res: ServerResponse): Reply {
  return {
    error(status, message) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8" }).end(message);
    },
  };
}

/** /VERB/NAMESPACE/POD[/UID]/CONTAINER (exec, attach, containerLogs) or /portForward/NAMESPACE/POD[/UID]. */
export function parsePodPath(
  path: string,
): { verb: string; namespace: string; pod: string; uid?: string; container?: string } | undefined {
  const parts = path
    .split("/")
    .slice(1)
    .map((part) => decodeURIComponent(part));
  const [verb, namespace, pod, ...rest] = parts;
  if (verb === undefined || namespace === undefined || pod === undefined || namespace === "" || pod === "")
    return undefined;
  if (verb === "portForward") {
    if (rest.length > 1) return undefined;
    return { verb, namespace, pod, ...(rest[0] === undefined || rest[0] === "" ? {} : { uid: rest[0] }) };
  }
  if (rest.length === 1) return rest[0] === "" ? undefined : { verb, namespace, pod, container: rest[0] };
  if (rest.length === 2) return rest[1] === "" ? undefined : { verb, namespace, pod, uid: rest[0], container: rest[1] };
  return undefined;
}

export async function startKubeletServer(options: KubeletServerOptions): Promise<RunningKubeletServer> {
  const { log } = options;
  const server: Server = createServer({
    cert: options.tls.cert,
    key: options.tls.key,
    ca: options.tls.ca,
    requestCert: true,
    // Unverified clients get a 401 from the handler, as the kubelet answers anonymous requests.
    rejectUnauthorized: false,
  });

  /** Upgraded connections are no longer the HTTP server's: closed by hand on stop. */
  const upgraded = new Set<Socket>();
  const authenticate = async (req: IncomingMessage): Promise<ClientIdentity> => {
    const socket = req.socket as TLSSocket;
    const identity = socket.authorized ? identityOf(socket.getPeerCertificate()) : undefined;
    if (identity === undefined) throw new HttpError(401, "Unauthorized");
    const url = new URL(req.url ?? "/", "https://kubelet");
    const attributes = requestAttributes(req.method ?? "GET", url.pathname, options.nodeName);
    const decision = await options.authorizer.authorize(identity, attributes).catch((error: unknown) => {
      log.warn({ node: options.nodeName, error: (error as Error).message }, "SubjectAccessReview failed");
      throw new HttpError(500, "Authorization error (see the node agent's log)");
    });
    if (!decision.allowed) throw new HttpError(403, forbiddenMessage(identity, attributes));
    return identity;
  };

  const podFor = (namespace: string, name: string, uid: string | undefined): PodHandle => {
    const pod = options.findPod(namespace, name);
    if (pod === undefined || (uid !== undefined && pod.object.metadata?.uid !== uid))
      throw new HttpError(404, `pod ${namespace}/${name} not found on node ${options.nodeName}`);
    return pod;
  };

  const handleRequest = async (req: IncomingMessage, res: ServerResponse) => {
    await authenticate(req);
    const url = new URL(req.url ?? "/", "https://kubelet");
    if (url.pathname === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" }).end("ok");
      return;
    }
    const target = parsePodPath(url.pathname);
    if (target?.verb === "containerLogs" && target.container !== undefined) {
      if (req.method !== "GET") throw new HttpError(405, "method not allowed");
      let query;
      try {
        query = parseLogQuery(url.searchParams);
      } catch (error) {
        if (error instanceof LogQueryError) throw new HttpError(400, error.message);
        throw error;
      }
      const pod = podFor(target.namespace, target.pod, target.uid);
      const meta = pod.object.metadata ?? {};
      const podDir = podLogDir(options.layout, target.namespace, target.pod, meta.uid ?? "");
      let file: string;
      try {
        file = runLogFile(podDir, { pod: target.pod, container: target.container, previous: query.previous });
      } catch (error) {
        throw new HttpError(400, (error as Error).message);
      }
      const container = target.container;
      res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
      const stillWriting = () => {
        const current = options.findPod(target.namespace, target.pod);
        if (current?.object.metadata?.uid !== meta.uid || current?.containerProcess(container) === undefined)
          return false;
        try {
          return runLogFile(podDir, { pod: target.pod, container }) === file;
        } catch {
          return false;
        }
      };
      await followLog(file, query, res, { stillWriting, follow: query.follow && !query.previous });
      res.end();
      return;
    }
    if (target !== undefined && ["exec", "attach", "portForward"].includes(target.verb))
      throw new HttpError(400, "Upgrade request required");
    throw new HttpError(404, "404 page not found");
  };

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    handleRequest(req, res).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500)
        log.warn({ node: options.nodeName, path: req.url, error: (error as Error).message }, "kubelet request failed");
      responseReply(res).error(status, (error as Error).message);
    });
  });

  /** What a remote command (exec, attach) needs, checked before the upgrade is answered. */
  const remoteCommand = (target: NonNullable<ReturnType<typeof parsePodPath>>, pod: PodHandle, url: URL) => {
    const container = target.container ?? "";
    const process = pod.containerProcess(container);
    if (process === undefined)
      throw new HttpError(400, `container ${container} is not valid for pod ${target.pod}: it is not running`);
    let stream: StreamOptions;
    try {
      stream = streamOptions(url.searchParams);
    } catch (error) {
      throw new HttpError(400, (error as Error).message);
    }
    const argv = url.searchParams.getAll("command");
    if (target.verb === "exec" && argv.length === 0)
      throw new HttpError(400, "you must specify at least one command for the container");
    return {
      stream,
      run: (transport: RemoteCommandTransport) =>
        target.verb === "exec"
          ? serveExec(transport, process, argv, stream, options.tools)
          : serveAttach(transport, (out, stop) => attachOutput(pod, container, out, stop), process.attach, stream),
    };
  };

  const upgrade = async (req: IncomingMessage, socket: Socket, head: Buffer) => {
    await authenticate(req);
    const url = new URL(req.url ?? "/", "https://kubelet");
    const target = parsePodPath(url.pathname);
    if (target === undefined || !["exec", "attach", "portForward"].includes(target.verb))
      throw new HttpError(404, "404 page not found");
    const upgradeTo = (req.headers.upgrade ?? "").toLowerCase();
    const pod = podFor(target.namespace, target.pod, target.uid);
    if (upgradeTo === "websocket" && target.verb !== "portForward") {
      const command = remoteCommand(target, pod, url);
      const offered = headerValues(req.headers["sec-websocket-protocol"]);
      const protocol = offered.length === 0 ? "channel.k8s.io" : negotiateProtocol(offered, webSocketProtocols);
      const key = req.headers["sec-websocket-key"];
      if (protocol === undefined || typeof key !== "string")
        throw new HttpError(
          400,
          `unable to upgrade: client offers [${offered.join(" ")}], server supports [${webSocketProtocols.join(" ")}]`,
        );
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n` +
          (offered.length === 0 ? "" : `Sec-WebSocket-Protocol: ${protocol}\r\n`) +
          "\r\n",
      );
      upgraded.add(socket);
      socket.on("close", () => upgraded.delete(socket));
      const transport = webSocketTransport(socket, protocol, command.stream);
      if (head.length > 0) socket.unshift(head);
      await command.run(transport);
      return;
    }
    if (!upgradeTo.includes("spdy/3.1"))
      throw new HttpError(
        400,
        `unable to upgrade: this kubelet speaks SPDY/3.1, and WebSocket for exec and attach (asked for ${upgradeTo || "nothing"})`,
      );
    const supported = target.verb === "portForward" ? portForwardProtocols : remoteCommandProtocols;
    const offered = headerValues(req.headers["x-stream-protocol-version"]);
    const protocol = negotiateProtocol(offered, supported);
    if (protocol === undefined)
      throw new HttpError(
        403,
        `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(" ")}], server supports [${supported.join(" ")}]`,
      );
    const podName = `${target.namespace}/${target.pod}`;
    let handler: StreamHandler;
    let run: (session: SpdySession) => Promise<unknown>;
    if (target.verb === "portForward") {
      const forwardTo = pod.portForwardTarget;
      if (forwardTo === undefined) throw new HttpError(400, `pod ${podName} has no network yet`);
      handler = portForwarder({
        target: forwardTo,
        nsenter: options.tools.nsenter,
        nodeBinary: options.nodeBinary,
        pod: podName,
        uid: pod.object.metadata?.uid ?? "",
      });
      run = () => Promise.resolve();
    } else {
      const command = remoteCommand(target, pod, url);
      const streams = new RemoteCommandStreams(command.stream);
      handler = streams.accept;
      run = (session) => command.run(spdyTransport(session, streams));
    }
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" +
        `X-Stream-Protocol-Version: ${protocol}\r\n\r\n`,
    );
    upgraded.add(socket);
    socket.on("close", () => upgraded.delete(socket));
    const session = new SpdySession(socket, handler);
    session.feed(head);
    try {
      await run(session);
    } catch (error) {
      log.warn(
        { node: options.nodeName, path: url.pathname, error: (error as Error).message },
        "kubelet stream failed",
      );
      session.close();
    }
  };

  const attachOutput = async (pod: PodHandle, container: string, out: Writable, stop: Promise<void>) => {
    const meta = pod.object.metadata ?? {};
    const podDir = podLogDir(options.layout, meta.namespace ?? "", meta.name ?? "", meta.uid ?? "");
    const file = runLogFile(podDir, { pod: meta.name ?? "", container });
    let stopped = false;
    void stop.then(() => (stopped = true));
    await followLog(file, { previous: false, follow: true, fromEnd: true }, out, {
      stillWriting: () => !stopped && pod.containerProcess(container) !== undefined,
      follow: true,
    });
  };

  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on("error", () => undefined);
    upgrade(req, socket, head).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      if (status === 500)
        log.warn({ node: options.nodeName, path: req.url, error: (error as Error).message }, "kubelet stream failed");
      if (socket.writable && !socket.destroyed) socketReply(socket).error(status, (error as Error).message);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
        for (const socket of upgraded) socket.destroy();
      }),
  };
}
