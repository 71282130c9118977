// The informer under the two failures a watch can suffer without the API
// server going away: its resourceVersion expires (410 Gone), or the connection
// silently stops delivering (a stall). In both, the controller must converge.
import { strict as assert } from "node:assert";
import { KubeConfig } from "@kubernetes/client-node";
import { useCluster } from "../fixture/cluster.js";
import {
  apiListWatch,
  findCondition,
  Informer,
  KubeClient,
  type KubeObject,
  type ListWatch,
  type Manager,
  type ResourceType,
} from "../../src/runtime/index.js";
import { addMirrorController, mirrors } from "../fixture/sample-controller.js";
import { installMirrorCrd, mirror, testManager, waitFor } from "../fixture/runtime.js";
import { FreezingProxy } from "../fixture/tcp-proxy.js";

/** A kubeconfig like the given one, but reaching the API server through 127.0.0.1:port. */
function throughPort(kubeConfig: KubeConfig, port: number): KubeConfig {
  const cluster = kubeConfig.getCurrentCluster()!;
  const proxied = new KubeConfig();
  proxied.loadFromOptions({
    clusters: [{ ...cluster, server: `https://127.0.0.1:${port}` }],
    users: kubeConfig.getUsers(),
    contexts: kubeConfig.getContexts(),
    currentContext: kubeConfig.getCurrentContext(),
  });
  return proxied;
}

describe("runtime: informer resilience on a real API server", function () {
  this.timeout(60_000);
  const cluster = useCluster("runtime-res");
  let manager: Manager | undefined;
  let direct: KubeClient;

  before(async () => {
    await installMirrorCrd(cluster.kubeConfig);
    direct = new KubeClient(cluster.kubeConfig);
  });
  afterEach(async () => {
    await manager?.stop();
    manager = undefined;
  });
  after(() => {
    direct.close();
  });

  const isReady = async (name: string) => {
    const current = await direct.get(mirrors, name, cluster.namespace);
    return findCondition(current?.status?.conditions, "Ready")?.status === "True";
  };

  it("relists after 410 Gone and reconciles what only the expired watch would have shown", async () => {
    let releaseWatch: () => void = () => undefined;
    const objectCreated = new Promise<void>((resolve) => (releaseWatch = resolve));
    let broken = false;
    // The first watch of Mirrors starts from resourceVersion "1", long out of the watch cache's window,
    // as if this process had been cut off for hours: the API server answers 410 Gone.
    const expireFirstWatch = <T extends KubeObject>(real: ListWatch<T>): ListWatch<T> => ({
      list: () => real.list(),
      watch: async (resourceVersion, onEvent) => {
        if (broken) return real.watch(resourceVersion, onEvent);
        broken = true;
        await objectCreated;
        return real.watch("1", onEvent);
      },
    });
    manager = testManager(cluster.kubeConfig, {
      cache: {
        wrapListWatch: <T extends KubeObject>(type: ResourceType<T>, _scope: unknown, real: ListWatch<T>) =>
          (type as ResourceType<KubeObject>) === mirrors ? expireFirstWatch(real) : real,
      },
    });
    addMirrorController(manager, { namespace: cluster.namespace });
    await manager.start();
    const informer = manager.cache.informer(mirrors, { namespace: cluster.namespace });
    await informer.waitForSync();

    // Created after the list: only a watch (or a relist) can reveal it.
    await direct.create(mirrors, mirror(cluster.namespace, "after-list", { k: "v" }));
    releaseWatch();
    await waitFor("after-list to be reconciled", () => isReady("after-list"));
    assert.ok(informer.stats.gone >= 1, `410s seen: ${informer.stats.gone}`);
    assert.ok(informer.stats.lists >= 2, `lists: ${informer.stats.lists}`);
  });

  it("restarts a stalled watch and converges, where an informer without the watchdog stays blind", async () => {
    const server = new URL(cluster.kubeConfig.getCurrentCluster()!.server);
    const proxy = await FreezingProxy.start({ host: server.hostname, port: Number(server.port) });
    const proxied = throughPort(cluster.kubeConfig, proxy.port);
    const stallTimeoutMs = 3000;
    manager = testManager(proxied, { cache: { stallTimeoutMs }, client: { requestTimeoutMs: 3000 } });
    addMirrorController(manager, { namespace: cluster.namespace });
    const blindClient = new KubeClient(proxied);
    const blind = new Informer({
      name: "without-watchdog",
      listWatch: apiListWatch(blindClient, mirrors, { namespace: cluster.namespace }),
      stallTimeoutMs: 3_600_000,
    });
    try {
      blind.start();
      await manager.start();
      await direct.create(mirrors, mirror(cluster.namespace, "before-stall", { k: "v" }));
      await waitFor("before-stall to be reconciled", () => isReady("before-stall"));
      await waitFor(
        "the blind informer to see before-stall",
        () => blind.get("before-stall", cluster.namespace) !== undefined,
      );
      const informer = manager.cache.informer(mirrors, { namespace: cluster.namespace });
      const stallsBefore = informer.stats.stalls;

      assert.ok(proxy.freezeOpenConnections() >= 2, "the watches go through the proxy");
      await direct.create(mirrors, mirror(cluster.namespace, "during-stall", { k: "v" }));
      await waitFor("during-stall to be reconciled", () => isReady("during-stall"), 30_000);

      assert.ok(informer.stats.stalls > stallsBefore, "the watchdog restarted the frozen watch");
      assert.equal(blind.get("during-stall", cluster.namespace), undefined, "a frozen watch never errors by itself");
    } finally {
      await blind.stop();
      blindClient.close();
      await manager.stop();
      manager = undefined;
      await proxy.close();
    }
  });

  it("gives up on a list or watch request that the server never answers", async () => {
    const server = new URL(cluster.kubeConfig.getCurrentCluster()!.server);
    const proxy = await FreezingProxy.start({ host: server.hostname, port: Number(server.port) });
    const client = new KubeClient(throughPort(cluster.kubeConfig, proxy.port), { requestTimeoutMs: 500 });
    try {
      proxy.freezeNewConnections = true;
      await assert.rejects(
        client.list(mirrors, { namespace: cluster.namespace }),
        /no answer from the API server within 500 ms/,
      );
      const watch = { namespace: cluster.namespace, resourceVersion: "", allowBookmarks: true, timeoutSeconds: 60 };
      await assert.rejects(
        client.watch(mirrors, watch, () => undefined),
        /no answer to the watch request within 500 ms/,
      );
    } finally {
      client.close();
      await proxy.close();
    }
  });
});
