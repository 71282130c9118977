// The encryption key both ends of a process server / master target pair share, on a real API
// server: machines of one pair reconcile concurrently, each proposing a key of its own, and the
// master target's copy must hold the key the source Secret holds (else every frame is refused).
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { ensureSharedKey } from "../../src/controllers/protectedmachine/replicators.js";
import { KubeClient, namespaces, secrets } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";

describe("ProtectedMachine: the pair's shared encryption key (integration)", function () {
  this.timeout(120_000);
  const cluster = useCluster("keys");
  let client: KubeClient;
  before(() => {
    client = new KubeClient(cluster.kubeConfig);
  });
  after(() => {
    client.close();
  });

  const keyOf = async (name: string, namespace: string) => (await client.get(secrets, name, namespace))?.data?.key;

  it("concurrent reconciles agree on one key: the copy holds what the source Secret holds", async () => {
    for (let round = 0; round < 5; round++) {
      const copyNamespace = `${cluster.namespace}-dr${round}`;
      await client.create(namespaces, { metadata: { name: copyNamespace } });
      const name = `ksr-key-round-${round}`;
      const proposed = Array.from({ length: 6 }, () => randomBytes(32).toString("base64"));
      await Promise.all(
        proposed.map((key) =>
          ensureSharedKey(client, { name, namespace: cluster.namespace, copyNamespace, labels: {}, key }),
        ),
      );
      const source = await keyOf(name, cluster.namespace);
      assert.ok(source !== undefined && proposed.includes(source), `round ${round}: the source holds no proposed key`);
      assert.equal(await keyOf(name, copyNamespace), source, `round ${round}: the copy differs from the source`);
      // Once there, the key stays: a later reconcile proposing another changes neither.
      await ensureSharedKey(client, {
        name,
        namespace: cluster.namespace,
        copyNamespace,
        labels: {},
        key: randomBytes(32).toString("base64"),
      });
      assert.deepEqual([await keyOf(name, cluster.namespace), await keyOf(name, copyNamespace)], [source, source]);
    }
  });
});
