// A list-then-watch client recovers from 410 Gone the way it must in production:
// an apiserver restart refills its watch caches, so older resourceVersions expire.
import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CoreV1Api, Watch, type KubeConfig, type V1ObjectMeta } from "@kubernetes/client-node";
import { down, restartComponent, up, type ClusterState } from "../../src/local/cluster.js";
import { kubeConfigFor, sharedCluster } from "../fixture/cluster.js";

/** A watch event: a ConfigMap, or for ERROR events a Status with code and reason. */
interface WatchEvent {
  type: string;
  object: { metadata?: V1ObjectMeta; code?: number; reason?: string };
}

/** Watches configmaps from resourceVersion until `done` accepts the events seen (or 20 s pass). */
async function watchConfigMaps(
  kubeConfig: KubeConfig,
  resourceVersion: string,
  done: (events: WatchEvent[]) => boolean,
  whileWatching: () => Promise<unknown> = () => Promise.resolve(),
): Promise<{ events: WatchEvent[]; error?: unknown }> {
  const events: WatchEvent[] = [];
  let error: unknown;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const request = await new Watch(kubeConfig).watch(
    "/api/v1/namespaces/default/configmaps",
    { resourceVersion },
    (type: string, object: WatchEvent["object"]) => {
      events.push({ type, object });
      if (done(events)) finish();
    },
    (err: unknown) => {
      error = err;
      finish();
    },
  );
  await whileWatching();
  await Promise.race([finished, sleep(20_000)]);
  request.abort();
  return { events, error };
}

const names = (events: WatchEvent[]) => events.map((e) => `${e.type}:${e.object.metadata?.name ?? ""}`);

describe("list-then-watch across an apiserver restart", function () {
  this.timeout(120_000);
  let dir: string;
  let state: ClusterState;

  before(async function () {
    this.timeout(15 * 60_000);
    const { binDir } = await sharedCluster();
    dir = mkdtempSync(join(tmpdir(), "ksr-watch-"));
    state = await up({ dir, binDir });
  });

  after(async () => {
    await down({ dir });
    rmSync(dir, { recursive: true, force: true });
  });

  it("gets 410 Gone for a resourceVersion older than the restarted cache, and resumes after a relist", async () => {
    let core = kubeConfigFor(state).makeApiClient(CoreV1Api);
    const listed = await core.listNamespacedConfigMap({ namespace: "default" });
    const staleVersion = listed.metadata?.resourceVersion ?? "";
    assert.notEqual(staleVersion, "");
    // Changes after the list move etcd on, so the restarted cache starts after staleVersion.
    for (let i = 0; i < 5; i++)
      await core.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: `early-${i}` } } });

    state = await restartComponent(state, "kube-apiserver");
    const kubeConfig = kubeConfigFor(state);
    core = kubeConfig.makeApiClient(CoreV1Api);

    const expired = await watchConfigMaps(kubeConfig, staleVersion, (events) => events.some((e) => e.type === "ERROR"));
    const status = expired.events.find((e) => e.type === "ERROR")?.object;
    assert.equal(
      status?.code,
      410,
      `expected a 410 Gone event, got ${JSON.stringify(names(expired.events))} / ${String(expired.error)}`,
    );
    assert.equal(status.reason, "Expired");

    // Recovery: relist for a current resourceVersion, then watch from it.
    const relisted = await core.listNamespacedConfigMap({ namespace: "default" });
    assert.equal(
      relisted.items.filter((cm) => cm.metadata?.name?.startsWith("early-")).length,
      5,
      "the relist sees every object",
    );
    const resumed = await watchConfigMaps(
      kubeConfig,
      relisted.metadata?.resourceVersion ?? "",
      (events) => names(events).includes("ADDED:after-restart"),
      () => core.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "after-restart" } } }),
    );
    assert.deepEqual(names(resumed.events), ["ADDED:after-restart"], "only changes after the relist are delivered");
  });
});
