// Loopback port selection and checks for the local control plane.
import { createServer } from "node:net";

export const loopback = "127.0.0.1";

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: loopback, port, exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === "object" && address !== null ? address.port : port;
      server.close(() => {
        resolve(bound);
      });
    });
  });
}

/** A port the kernel reports free on loopback right now. */
export function freePort(): Promise<number> {
  return listenOnce(0);
}

/** Throws an actionable error when the port cannot be bound on loopback. */
export async function assertPortFree(port: number, what: string, flag: string): Promise<void> {
  try {
    await listenOnce(port);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new Error(
        `port ${port} on ${loopback} (${what}) is already in use by another process; stop it or choose another port with ${flag}`,
      );
    }
    throw new Error(`cannot bind port ${port} on ${loopback} (${what}): ${(error as Error).message}`);
  }
}

/** Parses a --*-port flag value. */
export function parsePort(value: string, flag: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${flag} must be a whole number from 1 to 65535, got "${value}"`);
  }
  return port;
}
