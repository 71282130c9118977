// A TCP proxy that can freeze its connections: bytes stop flowing both ways
// while the sockets stay open, the way a dead NAT entry or a wedged load
// balancer looks to a client. TLS passes through untouched.
import { connect, createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

interface Pair {
  client: Socket;
  upstream: Socket;
}

export class FreezingProxy {
  private readonly pairs = new Set<Pair>();
  /** While set, new connections are accepted and then never forwarded. */
  freezeNewConnections = false;

  private constructor(private readonly server: Server) {}

  static async start(target: { host: string; port: number }): Promise<FreezingProxy> {
    const server = createServer();
    const proxy = new FreezingProxy(server);
    server.on("connection", (client) => {
      proxy.forward(client, target);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get openConnections(): number {
    return this.pairs.size;
  }

  /** Every connection open now stops forwarding for good; new connections work normally. */
  freezeOpenConnections(): number {
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
    return this.pairs.size;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }

  private forward(client: Socket, target: { host: string; port: number }): void {
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    if (this.freezeNewConnections) {
      client.pause();
      return;
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}
