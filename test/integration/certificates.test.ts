// The operator's certificate issuer on a real API server, with a real process
// server using what it issues: the CA Secret is made once, replicator
// identities are Secrets whose common name carries the role (and the machine,
// for agents), renewal rewrites the Secret in place, and a revoked agent is
// refused by the process server that mounts the revocation list.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { connect, type PeerCertificate } from "node:tls";
import { join } from "node:path";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import * as x509 from "@peculiar/x509";
import { caSecretName } from "../../src/controllers/certificates/authority.js";
import {
  certificateSecretName,
  revocationListKey,
  revocationListName,
  SecretIssuer,
} from "../../src/controllers/certificates/secret-issuer.js";
import { IngestClient, type OpenReply } from "../../src/gen/ksr/replication/v1/replication.js";
import { freePort } from "../../src/local/ports.js";
import { machineIdOf } from "../../src/replicator/machine-id.js";
import { startProcessServer } from "../../src/replicator/process-server/server.js";
import { clientCredentials, grpcOptions, type TlsFiles } from "../../src/replicator/tls.js";
import { configMaps, KubeClient, secrets, systemClock, type Clock, type Secret } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";

const dayMs = 24 * 60 * 60 * 1000;

/** The system clock, moved forward by hand: certificates are issued by real time, judged by this clock. */
class ShiftedClock implements Clock {
  offsetMs = 0;
  now(): number {
    return Date.now() + this.offsetMs;
  }
  setTimer(fn: () => void, ms: number) {
    return systemClock.setTimer(fn, ms);
  }
}

const decoded = (secret: Secret | undefined, key: string) =>
  Buffer.from(secret?.data?.[key] ?? "", "base64").toString("utf8");
const certificateOf = (secret: Secret | undefined) => new x509.X509Certificate(decoded(secret, "tls.crt"));

function openReply(client: IngestClient, machineId: string): Promise<OpenReply> {
  return new Promise((resolve, reject) => {
    client.open({ machineId, capture: undefined }, new Metadata(), { deadline: Date.now() + 5000 }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

describe("certificate issuer on a real API server, with a process server using its certificates", function () {
  this.timeout(60_000);
  const cluster = useCluster("certs");
  let client: KubeClient;
  let work: string;
  const clock = new ShiftedClock();
  let issuer: SecretIssuer;

  before(async () => {
    client = new KubeClient(cluster.kubeConfig);
    work = await mkdtemp(join(tmpdir(), "ksr-certs-"));
    issuer = new SecretIssuer({ client, caNamespace: cluster.namespace, clock });
  });
  after(async () => {
    client.close();
    await rm(work, { recursive: true, force: true });
  });

  /** Writes a Secret's files the way the kubelet mounts it. */
  async function mount(name: string): Promise<TlsFiles> {
    const secret = await client.get(secrets, name, cluster.namespace);
    const dir = await mkdtemp(join(work, `${name}-`));
    const files = { ca: join(dir, "ca.crt"), cert: join(dir, "tls.crt"), key: join(dir, "tls.key") };
    await writeFile(files.ca, decoded(secret, "ca.crt"));
    await writeFile(files.cert, decoded(secret, "tls.crt"));
    await writeFile(files.key, decoded(secret, "tls.key"), { mode: 0o600 });
    return files;
  }

  const ensure = (role: "process-server" | "agent", machineId?: string) =>
    issuer.ensureReplicatorCertificate(
      role === "agent"
        ? { namespace: cluster.namespace, role, machineId }
        : { namespace: cluster.namespace, role, dnsNames: ["localhost"] },
    );

  /** A process server on loopback with the given identity (master target absent: Open needs none). */
  const processServer = async (tls: TlsFiles, cacheDir: string, revokedSerialsFile?: string) => {
    const port = await freePort();
    const server = await startProcessServer({
      listen: `localhost:${port}`,
      tls,
      encryptionKey: randomBytes(32),
      cacheDir: join(work, cacheDir),
      masterTarget: `localhost:${await freePort()}`,
      compression: "zstd",
      cacheLimitBytes: 1024 ** 3,
      bandwidthBytesPerSecond: 0,
      log: { warn: () => undefined },
      ...(revokedSerialsFile === undefined ? {} : { revokedSerialsFile }),
    });
    return { port, server };
  };

  it("makes one CA Secret however many operators start at once, and issues identities from it", async () => {
    const rivals = [1, 2, 3].map(() => new SecretIssuer({ client, caNamespace: cluster.namespace, clock }));
    const names = await Promise.all(
      rivals.map((rival) =>
        rival.ensureReplicatorCertificate({
          namespace: cluster.namespace,
          role: "master-target",
          dnsNames: ["localhost"],
        }),
      ),
    );
    assert.deepEqual(new Set(names), new Set(["ksr-master-target-tls"]));
    const ca = await client.get(secrets, caSecretName, cluster.namespace);
    const issued = await client.get(secrets, "ksr-master-target-tls", cluster.namespace);
    assert.equal(issued?.type, "kubernetes.io/tls");
    assert.equal(decoded(issued, "ca.crt"), decoded(ca, "tls.crt"), "every identity carries the one CA");
    const cert = certificateOf(issued);
    assert.equal(cert.subjectName.getField("CN")[0], "ksr-master-target");
    assert.ok(
      await cert.verify({ publicKey: new x509.X509Certificate(decoded(ca, "tls.crt")).publicKey, signatureOnly: true }),
    );
  });

  it("refuses requests it cannot honour, naming what to fix", async () => {
    await assert.rejects(
      issuer.ensureReplicatorCertificate({ namespace: cluster.namespace, role: "agent" }),
      /an agent certificate needs the machine id/,
    );
    await assert.rejects(
      issuer.ensureReplicatorCertificate({ namespace: cluster.namespace, role: "process-server", machineId: "x.y" }),
      /not bound to a machine; drop machineId/,
    );
    await assert.rejects(
      issuer.ensureReplicatorCertificate({ namespace: cluster.namespace, role: "agent", machineId: "a/b" }),
      /machine id "a\/b" must be/,
    );
  });

  it("binds an agent to its machine, renews in place before expiry, and revokes it when its machine goes", async () => {
    const machineA = machineIdOf({ namespace: cluster.namespace, name: "a" });
    const machineB = machineIdOf({ namespace: cluster.namespace, name: "b" });
    const serverSecret = await ensure("process-server");
    const agentSecret = await ensure("agent", machineA);
    assert.equal(agentSecret, certificateSecretName({ role: "agent", machineId: machineA }));
    const first = await client.get(secrets, agentSecret, cluster.namespace);
    assert.equal(certificateOf(first).subjectName.getField("CN")[0], `ksr-agent:${machineA}`);

    // Asked again while fresh: nothing is written.
    await ensure("agent", machineA);
    const unchanged = await client.get(secrets, agentSecret, cluster.namespace);
    assert.equal(unchanged?.metadata.resourceVersion, first?.metadata.resourceVersion);

    const revokedFile = join(work, "revoked");
    const { port, server } = await processServer(await mount(serverSecret), "ps-cache", revokedFile);
    const connect = async () =>
      new IngestClient(`localhost:${port}`, await clientCredentials(await mount(agentSecret)), grpcOptions);
    try {
      const agent = await connect();
      await openReply(agent, machineA);
      await assert.rejects(openReply(agent, machineB), (error: ServiceError) => {
        assert.equal(error.code, status.PERMISSION_DENIED);
        assert.match(error.details, new RegExp(`agent of machine ${machineA} may not push for machine ${machineB}`));
        return true;
      });

      // Two thirds into its 7 days the agent's certificate is renewed: same Secret, new content.
      clock.offsetMs = 5 * dayMs;
      await ensure("agent", machineA);
      const renewed = await client.get(secrets, agentSecret, cluster.namespace);
      assert.notEqual(certificateOf(renewed).serialNumber, certificateOf(first).serialNumber);
      await openReply(agent, machineA); // the connection made with the old certificate goes on
      const reconnected = await connect();
      await openReply(reconnected, machineA); // and a new one with the renewed certificate is admitted

      // The machine is deleted: its Secret goes, and its serial joins the list the process server mounts.
      await issuer.revokeAgent({ namespace: cluster.namespace, machineId: machineA });
      assert.equal(await client.get(secrets, agentSecret, cluster.namespace), undefined);
      const list = await client.get(configMaps, revocationListName, cluster.namespace);
      const listed = list?.data?.[revocationListKey] ?? "";
      const serials = listed
        .trim()
        .split("\n")
        .map((line) => line.split(" ")[0]);
      const hex = (cert: x509.X509Certificate) => cert.serialNumber.toUpperCase().replace(/^0+/, "");
      assert.deepEqual(serials.sort(), [hex(certificateOf(first)), hex(certificateOf(renewed))].sort());
      await writeFile(revokedFile, listed);
      // Both the renewed certificate and the one it replaced (still within its validity) are refused.
      for (const revoked of [agent, reconnected]) {
        await assert.rejects(openReply(revoked, machineA), (error: ServiceError) => {
          assert.equal(error.code, status.PERMISSION_DENIED);
          assert.match(error.details, /was revoked/);
          return true;
        });
      }
      agent.close();
      reconnected.close();
    } finally {
      await server.close();
      clock.offsetMs = 0;
    }
  });

  it("a process server picks up its renewed certificate from the files, while open connections go on", async function () {
    this.timeout(120_000);
    const machine = machineIdOf({ namespace: cluster.namespace, name: "c" });
    const serverSecret = await ensure("process-server");
    const agentSecret = await ensure("agent", machine);
    const serverFiles = await mount(serverSecret);
    const agentFiles = await mount(agentSecret);
    const { port, server } = await processServer(serverFiles, "ps-cache-renewal");
    /** The serial the server presents to a new connection. */
    const presented = async () => {
      const [ca, cert, key] = await Promise.all(
        [agentFiles.ca, agentFiles.cert, agentFiles.key].map((file) => readFile(file)),
      );
      return new Promise<string>((resolve, reject) => {
        const socket = connect({ host: "localhost", port, ca, cert, key, ALPNProtocols: ["h2"] }, () => {
          const peer: PeerCertificate = socket.getPeerCertificate();
          socket.destroy();
          resolve(peer.serialNumber);
        });
        socket.once("error", reject);
      });
    };
    const serial = (secret: Secret | undefined) => certificateOf(secret).serialNumber.toUpperCase().replace(/^0+/, "");
    try {
      const before = await client.get(secrets, serverSecret, cluster.namespace);
      assert.equal((await presented()).replace(/^0+/, ""), serial(before));
      const open = new IngestClient(`localhost:${port}`, await clientCredentials(agentFiles), grpcOptions);
      await openReply(open, machine);

      clock.offsetMs = 21 * dayMs; // past two thirds of a server certificate's 30 days
      await ensure("process-server");
      const renewed = await client.get(secrets, serverSecret, cluster.namespace);
      assert.notEqual(serial(renewed), serial(before));
      // The kubelet rewrites the mounted files; the process server is not restarted.
      await writeFile(serverFiles.cert, decoded(renewed, "tls.crt"));
      await writeFile(serverFiles.key, decoded(renewed, "tls.key"));
      await eventually(
        "new connections to see the renewed certificate",
        async () => ((await presented()).replace(/^0+/, "") === serial(renewed) ? true : undefined),
        90_000,
        { intervalMs: 1000 },
      );
      await openReply(open, machine); // the connection opened before the renewal still works
      open.close();
    } finally {
      await server.close();
      clock.offsetMs = 0;
    }
  });
});
