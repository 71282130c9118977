// /metrics, /healthz and /readyz on one HTTP port, as controller-runtime serves them.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface HealthChecks {
  /** Alive: false makes the kubelet restart the process. */
  healthy(): { ok: boolean; detail: string };
  /** Ready: false takes the pod out of service endpoints. */
  ready(): { ok: boolean; detail: string };
}

export class HealthServer {
  private server: Server | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly checks: HealthChecks,
  ) {}

  async listen(port: number, host: string): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      const check = path === "/healthz" ? this.checks.healthy() : path === "/readyz" ? this.checks.ready() : undefined;
      if (check !== undefined) {
        res.writeHead(check.ok ? 200 : 503, { "content-type": "text/plain" }).end(check.detail + "\n");
      } else if (path === "/metrics") {
        this.registry.metrics().then(
          (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
          (error: unknown) => res.writeHead(500).end(String(error)),
        );
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics, /healthz or /readyz\n");
      }
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  }
}
