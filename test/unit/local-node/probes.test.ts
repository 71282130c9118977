import { strict as assert } from "node:assert";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttp2Server, type Http2Server } from "node:http2";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import type { V1Container, V1Probe } from "@kubernetes/client-node";
import {
  healthCheckRequest,
  healthCheckStatus,
  ProbeThresholds,
  resolvePort,
  runProbe,
  type ProbeTarget,
} from "../../../src/local/node/probes.js";

const container: V1Container = { name: "c", ports: [{ name: "http", containerPort: 8080 }] };
const target = (exitCode = 0): ProbeTarget => ({
  podIP: "127.0.0.1",
  container,
  exec: () => Promise.resolve({ exitCode, output: exitCode === 0 ? "" : "not ready yet" }),
});
const portOf = (server: { address(): AddressInfo | string | null }) => (server.address() as AddressInfo).port;
const listening = <T extends Server | Http2Server>(server: T) =>
  new Promise<T>((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      resolve(server);
    }),
  );

/** Frames a grpc.health.v1.HealthCheckResponse{status}. */
function healthResponse(status: number): Buffer {
  const frame = Buffer.alloc(7);
  frame.writeUInt32BE(2, 1);
  frame[5] = 0x08;
  frame[6] = status;
  return frame;
}

describe("local node probes", () => {
  it("resolves named and numeric ports", () => {
    assert.deepEqual(
      [resolvePort("http", container), resolvePort(9090, container), resolvePort("7070", container)],
      [8080, 9090, 7070],
    );
    assert.throws(() => resolvePort("grpc", container), /not a port of container c/);
  });

  it("encodes a health request and decodes a health response", () => {
    assert.deepEqual([...healthCheckRequest("")], [0, 0, 0, 0, 0]);
    assert.deepEqual([...healthCheckRequest("ab")], [0, 0, 0, 0, 4, 0x0a, 2, 0x61, 0x62]);
    assert.deepEqual([healthCheckStatus(healthResponse(1)), healthCheckStatus(healthResponse(2))], [1, 2]);
  });

  const sequences: [string, Partial<V1Probe>, boolean, boolean[], boolean[]][] = [
    ["readiness flips on the first success", {}, false, [true], [true]],
    ["liveness needs three failures by default", {}, true, [false, false, false], [true, true, false]],
    [
      "a success resets the failure count",
      { failureThreshold: 2 },
      true,
      [false, true, false, false],
      [true, true, true, false],
    ],
    [
      "successThreshold 2 needs two in a row",
      { successThreshold: 2 },
      false,
      [true, false, true, true],
      [false, false, false, true],
    ],
  ];
  for (const [what, probe, initial, attempts, results] of sequences) {
    it(what, () => {
      const thresholds = new ProbeThresholds(probe, initial);
      assert.deepEqual(
        attempts.map((ok) => {
          thresholds.record(ok);
          return thresholds.result;
        }),
        results,
      );
    });
  }

  it("passes a tcp probe on a listening port and fails on a closed one", async () => {
    const server = createTcpServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = portOf(server);
    try {
      assert.deepEqual(await runProbe({ tcpSocket: { port } }, target()), { ok: true });
    } finally {
      server.close();
    }
    const closed = await runProbe({ tcpSocket: { port } }, target());
    assert.ok(!closed.ok && closed.message.includes("ECONNREFUSED"));
  });

  it("treats 2xx and 3xx as success for http probes, sending the configured headers", async () => {
    const server = await listening(
      createHttpServer((req, res) => {
        res.statusCode = req.url === "/ok" && req.headers["x-probe"] === "yes" ? 204 : req.url === "/moved" ? 302 : 503;
        res.end();
      }),
    );
    const port = portOf(server);
    const probe = (path: string): V1Probe => ({
      httpGet: { path, port, httpHeaders: [{ name: "X-Probe", value: "yes" }] },
    });
    try {
      assert.deepEqual(await runProbe(probe("/ok"), target()), { ok: true });
      assert.deepEqual(await runProbe(probe("/moved"), target()), { ok: true });
      assert.deepEqual(await runProbe(probe("/down"), target()), {
        ok: false,
        message: "HTTP probe failed with statuscode: 503",
      });
    } finally {
      server.close();
    }
  });

  it("speaks grpc.health.v1 over plain HTTP/2 for grpc probes", async () => {
    const server = await listening(
      createHttp2Server((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (chunk: Buffer) => chunks.push(chunk));
        req.on("end", () => {
          const service = Buffer.concat(chunks).subarray(7).toString();
          res.setHeader("content-type", "application/grpc");
          res.addTrailers({ "grpc-status": "0" });
          res.end(healthResponse(service === "broken" ? 2 : 1));
        });
      }),
    );
    const port = portOf(server);
    try {
      assert.deepEqual(await runProbe({ grpc: { port } }, target()), { ok: true });
      const broken = await runProbe({ grpc: { port, service: "broken" } }, target());
      assert.ok(!broken.ok && broken.message.includes("NOT_SERVING"), JSON.stringify(broken));
    } finally {
      server.close();
    }
  });

  it("runs exec probes through the target and reports their output", async () => {
    assert.deepEqual(await runProbe({ exec: { command: ["true"] } }, target(0)), { ok: true });
    assert.deepEqual(await runProbe({ exec: { command: ["false"] } }, target(1)), {
      ok: false,
      message: "not ready yet",
    });
  });
});
