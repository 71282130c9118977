// gRPC plumbing shared by the replicators: errors as statuses, promisified calls, servers.
import type { Http2Server, ServerHttp2Session } from "node:http2";
import {
  Metadata,
  Server,
  status,
  type CallOptions,
  type ServerCredentials,
  type sendUnaryData,
  type ServiceError,
  type UntypedServiceImplementation,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { grpcOptions, PermissionError } from "./tls.js";

export interface StatusError {
  code: status;
  details: string;
}

/** An error that names the status a caller should see (NOT_FOUND, UNAVAILABLE, ...). */
export class CallError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = "CallError";
  }
}

/** Maps an error to the status a caller should see: our validation errors keep their message. */
export function toStatus(error: unknown, invalidArgument: (error: unknown) => boolean): StatusError {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof PermissionError) return { code: status.PERMISSION_DENIED, details: message };
  if (error instanceof CallError) return { code: error.code, details: message };
  if (invalidArgument(error)) return { code: status.INVALID_ARGUMENT, details: message };
  return { code: status.INTERNAL, details: message };
}

/** Answers a unary call with the work's result, or with its error (a throw inside work included) as a status. */
export function answerUnary<Reply>(
  callback: sendUnaryData<Reply>,
  work: () => Promise<Reply>,
  asStatus: (error: unknown) => StatusError,
): void {
  Promise.resolve()
    .then(work)
    .then(
      (reply) => {
        callback(null, reply);
      },
      (error: unknown) => {
        callback(asStatus(error), null);
      },
    );
}

export function unaryCall<Request, Response>(
  call: (request: Request, callback: (error: ServiceError | null, response: Response) => void) => unknown,
  request: Request,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    call(request, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

/** A generated client's unary method in its (request, metadata, options, callback) form. */
export type UnaryMethod<Request, Response> = (
  request: Request,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Response) => void,
) => unknown;

/** One unary call that fails (DEADLINE_EXCEEDED) unless answered within `timeoutMs`. */
export function callWithin<Request, Response>(
  method: UnaryMethod<Request, Response>,
  request: NoInfer<Request>,
  timeoutMs: number,
): Promise<Response> {
  return unaryCall<Request, Response>(
    (message, callback) => method(message, new Metadata(), { deadline: Date.now() + timeoutMs }, callback),
    request,
  );
}

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export async function startServer(
  listen: string,
  credentials: ServerCredentials,
  services: readonly [ServiceDefinition, UntypedServiceImplementation][],
): Promise<{ server: Server; port: number }> {
  const server = new Server(grpcOptions);
  for (const [definition, implementation] of services) server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, credentials, (error, boundPort) => {
      if (error) reject(error);
      else resolve(boundPort);
    });
  });
  widenReceiveWindows(server);
  return { server, port };
}

const receiveWindowBytes = 32 * 1024 * 1024;

/**
 * Node's HTTP/2 default receive window is 64 KiB per stream and grpc-js offers no server option
 * for it, so a client pushing megabytes stalls on a window update every 64 KiB (measured: the
 * agent → process server stream ran at ~25 MB/s on loopback). Every replicator stream carries
 * bulk data towards the server, so its sessions advertise a large window.
 */
function widenReceiveWindows(server: Server): void {
  const internals = server as unknown as { http2Servers?: Map<Http2Server, unknown> };
  for (const http2Server of internals.http2Servers?.keys() ?? []) {
    http2Server.on("session", (session: ServerHttp2Session) => {
      session.settings({ initialWindowSize: receiveWindowBytes });
      session.setLocalWindowSize(receiveWindowBytes);
    });
  }
}

export function shutdownServer(server: Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
