// The operator's certificate follows its Secret: after the issuer renewed it, new connections to
// replicators present the new certificate, while a channel opened before keeps working. Real
// gRPC with mutual TLS on loopback; the Secret and the issuer are the operator's own interfaces.
import { strict as assert } from "node:assert";
import { X509Certificate } from "node:crypto";
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";
import { OperatorIdentity, identityRefreshMs } from "../../src/controllers/certificates/operator-identity.js";
import type { CertificateIssuer } from "../../src/controllers/certificates/issuer.js";
import { ReplicatorClients } from "../../src/controllers/protectedmachine/replicator-clients.js";
import { ControlService, ControlStatus, type MachineRef } from "../../src/gen/ksr/replication/v1/replication.js";
import { createCertificateAuthority, type PemKeyPair } from "../../src/pki/certificates.js";
import { eventually } from "../fixture/eventually.js";
import { normalizeSerial } from "../../src/replicator/tls.js";
import type { KubeClient, Secret } from "../../src/runtime/index.js";

const b64 = (text: string) => Buffer.from(text).toString("base64");

describe("the operator's identity across a renewal", function () {
  this.timeout(30_000);
  let server: Server;
  let port: number;
  let ca: Awaited<ReturnType<typeof createCertificateAuthority>>;

  let credentials: ServerCredentials;

  /** Answers Control.Status with the serial of the client certificate the connection presented. */
  const startServer = async (listenPort: number) => {
    server = new Server();
    server.addService(ControlService, {
      status(call: ServerUnaryCall<MachineRef, ControlStatus>, callback: sendUnaryData<ControlStatus>) {
        const serial = call.getAuthContext().sslPeerCertificate?.serialNumber ?? "";
        // Every field set, as the generated encoder needs; only the serial matters here.
        callback(null, { ...ControlStatus.decode(new Uint8Array()), machineId: serial });
      },
      requestResync: () => undefined,
      holdResync: () => undefined,
    });
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${listenPort}`, credentials, (error, bound) => {
        if (error === null) resolve(bound);
        else reject(error);
      });
    });
  };
  const restartServer = async () => {
    server.forceShutdown();
    await startServer(port);
  };

  before(async () => {
    ca = await createCertificateAuthority("test CA", 1);
    const serverPair = await ca.issue({ commonName: "ksr-process-server", dnsNames: ["ps.test.svc"], usage: "server" });
    credentials = ServerCredentials.createSsl(
      Buffer.from(ca.cert),
      [{ cert_chain: Buffer.from(serverPair.cert), private_key: Buffer.from(serverPair.key) }],
      true,
    );
    await startServer(0);
  });
  after(() => {
    server.forceShutdown();
  });

  it("presents the renewed certificate on new connections, and the open channel goes on", async () => {
    let pair: PemKeyPair = await ca.issue({ commonName: "ksr-operator", usage: "client" });
    const secret = (): Secret => ({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "ksr-operator-tls", namespace: "ksr-system" },
      data: { "ca.crt": b64(ca.cert), "tls.crt": b64(pair.cert), "tls.key": b64(pair.key) },
    });
    const issuer: CertificateIssuer = {
      ensureReplicatorCertificate: () => Promise.resolve("ksr-operator-tls"),
    } as unknown as CertificateIssuer;
    const client = { get: () => Promise.resolve(secret()) } as unknown as KubeClient;
    let now = 0;
    const identity = new OperatorIdentity({ client, certificates: issuer, namespace: "ksr-system" }, () => now);
    const peer = { address: `127.0.0.1:${port}`, serverName: "ps.test.svc" };
    const serialOf = (pem: string) => normalizeSerial(new X509Certificate(pem).serialNumber);

    const clients = new ReplicatorClients(
      (verify) => identity.credentials(verify),
      () => identity.refresh(),
    );
    const first = (await clients.controlStatus(peer, "m")).machineId;
    assert.equal(normalizeSerial(first), serialOf(pair.cert));

    const old = pair;
    pair = await ca.issue({ commonName: "ksr-operator", usage: "client" }); // the issuer renewed the Secret
    now += identityRefreshMs; // the next look at the Secret is due
    // The open connection goes on with the certificate it was made with.
    assert.equal(normalizeSerial((await clients.controlStatus(peer, "m")).machineId), serialOf(old.cert));
    // The replicator restarts (or the connection drops): the same client reconnects with the renewed one.
    await restartServer();
    // The first call may still meet the connection the restart cut; the client reconnects by itself.
    const renewed = await eventually("a call after the restart", () =>
      clients.controlStatus(peer, "m").then(
        (reply) => reply.machineId,
        () => undefined,
      ),
    );
    assert.equal(normalizeSerial(renewed), serialOf(pair.cert), "a new connection presents the renewed certificate");
    clients.close();
  });
});
