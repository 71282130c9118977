// gRPC plumbing shared by the replicators: errors as statuses, promisified calls, servers.
import {
  Server,
  status,
  type ServerCredentials,
  type ServiceError,
  type UntypedServiceImplementation,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { grpcOptions, PermissionError } from "./tls.js";

export interface StatusError {
  code: status;
  details: string;
}

/** Maps an error to the status a caller should see: our validation errors keep their message. */
export function toStatus(error: unknown, invalidArgument: (error: unknown) => boolean): StatusError {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof PermissionError) return { code: status.PERMISSION_DENIED, details: message };
  if (invalidArgument(error)) return { code: status.INVALID_ARGUMENT, details: message };
  return { code: status.INTERNAL, details: message };
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
  return { server, port };
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
