// The API server is killed (SIGKILL: connections reset, nothing closed cleanly)
// and started again while a controller runs. The controller must notice on its
// own, reconnect with back-off, relist when its resourceVersion expired, and
// converge on changes made after the restart. A dedicated control plane: the
// shared one serves other suites.
import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { down, restartComponent, up, type ClusterState } from "../../src/local/cluster.js";
import { kubeConfigFor, sharedCluster } from "../fixture/cluster.js";
import { findCondition, KubeClient, type Manager } from "../../src/runtime/index.js";
import { addMirrorController, mirrors, type Mirror } from "../fixture/sample-controller.js";
import { installMirrorCrd, mirror, testManager, waitFor } from "../fixture/runtime.js";

describe("runtime: a controller across an API server kill and restart", function () {
  this.timeout(120_000);
  let dir: string;
  let state: ClusterState;
  let manager: Manager | undefined;
  let client: KubeClient | undefined;

  before(async function () {
    this.timeout(15 * 60_000);
    const { binDir } = await sharedCluster();
    dir = mkdtempSync(join(tmpdir(), "ksr-runtime-restart-"));
    state = await up({ dir, binDir });
  });
  after(async function () {
    this.timeout(60_000);
    await manager?.stop();
    client?.close();
    await down({ dir });
    rmSync(dir, { recursive: true, force: true });
  });

  it("reconnects on its own and converges on changes made after the restart", async () => {
    const kubeConfig = kubeConfigFor(state);
    await installMirrorCrd(kubeConfig);
    client = new KubeClient(kubeConfig);
    const api = client;
    const readyAt = async (name: string, generation: number) => {
      const current = await api.get(mirrors, name, "default");
      return (
        findCondition(current?.status?.conditions, "Ready")?.status === "True" &&
        current?.status?.observedGeneration === generation
      );
    };
    manager = testManager(kubeConfig, { cache: { backoff: { initialMs: 200, maxMs: 2000, jitter: 0.5 } } });
    addMirrorController(manager);
    await manager.start();
    await api.create(mirrors, mirror("default", "survivor", { v: "1" }));
    await waitFor("survivor Ready", () => readyAt("survivor", 1));
    const informer = manager.cache.informer(mirrors);
    const errorsBefore = informer.stats.errors;

    const apiserver = state.components.find((component) => component.name === "kube-apiserver")!;
    process.kill(apiserver.pid, "SIGKILL");
    state = await restartComponent(state, "kube-apiserver");

    const survivor = (await api.get(mirrors, "survivor", "default"))!;
    await api.replace(mirrors, { ...survivor, spec: { data: { v: "2" } } } satisfies Mirror);
    await api.create(mirrors, mirror("default", "newcomer", { v: "1" }));
    await waitFor("survivor to follow its new spec", () => readyAt("survivor", 2), 60_000);
    await waitFor("newcomer Ready", () => readyAt("newcomer", 1), 60_000);
    assert.ok(informer.stats.errors > errorsBefore, "the informer saw the connection break");
    assert.ok(informer.hasSynced());
  });
});
