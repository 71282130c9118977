// `ksr local up/down` on dedicated clusters: nothing is left running, data
// survives a restart, and every start-up failure is reported clearly.
import { strict as assert } from "node:assert";
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api } from "@kubernetes/client-node";
import { resolveControlPlaneBinaries, controlPlaneBinaries } from "../../src/local/binaries.js";
import { down, readClusterState, status, up, type ClusterState } from "../../src/local/cluster.js";
import { assertPortFree } from "../../src/local/ports.js";
import { isRunning, type ProcessRecord } from "../../src/local/processes.js";
import { kubeConfigFor, sharedCluster } from "../fixture/cluster.js";

function assertAllStopped(records: ProcessRecord[]): void {
  assert.ok(records.length >= 4, "expected the four control-plane processes to have been recorded");
  const alive = records.filter(isRunning).map((r) => `${r.name} (pid ${r.pid})`);
  assert.deepEqual(alive, [], `processes left behind: ${alive.join(", ")}`);
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      resolve(server);
    });
  });
}

describe("ksr local lifecycle", function () {
  this.timeout(180_000);
  let binDir: string;
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "ksr-lifecycle-"));
    dirs.push(dir);
    return dir;
  };

  before(async function () {
    this.timeout(15 * 60_000);
    binDir = (await sharedCluster()).binDir;
  });

  after(async () => {
    for (const dir of dirs) {
      await down({ dir }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("stops every process on down, refuses a second up, and keeps data across restarts", async () => {
    const dir = tempDir();
    const first: ClusterState = await up({ dir, binDir });
    assert.equal(
      (await status(dir)).components.every((c) => c.healthy),
      true,
    );
    await assert.rejects(up({ dir, binDir }), /already running in .*ksr local down --dir/s);

    const core = kubeConfigFor(first).makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({
      namespace: "default",
      body: { metadata: { name: "kept" }, data: { a: "1" } },
    });

    const stopped = await down({ dir });
    assert.deepEqual(stopped.map((r) => r.name).sort(), [...first.components.map((c) => c.name)].sort());
    assertAllStopped(first.components);
    assert.deepEqual(readClusterState(dir)?.components, []);

    const second = await up({ dir, binDir });
    assert.equal(second.server, first.server, "the API server keeps its port across restarts");
    const kept = await kubeConfigFor(second)
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ namespace: "default", name: "kept" });
    assert.equal(kept.data?.a, "1");
    await down({ dir, purge: true });
    assertAllStopped(second.components);
    assert.equal(readClusterState(dir), undefined, "--purge removes the cluster directory");
  });

  it("reports a taken API port and starts nothing", async () => {
    const blocker = await listenOn(0);
    const address = blocker.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    try {
      const dir = tempDir();
      await assert.rejects(
        up({ dir, binDir, apiPort: port }),
        new RegExp(`port ${port} on 127\\.0\\.0\\.1 \\(kube-apiserver\\) is already in use.*--api-port`),
      );
      assert.equal(readClusterState(dir), undefined);
    } finally {
      blocker.close();
    }
  });

  it("reports missing binaries by name", async () => {
    const empty = tempDir();
    await assert.rejects(resolveControlPlaneBinaries(empty), new RegExp(`lacks ${controlPlaneBinaries.join(", ")}`));
  });

  it("reports a component that dies during start with its log, and stops the rest", async () => {
    const fakeBin = tempDir();
    for (const name of controlPlaneBinaries) {
      if (name !== "kube-apiserver") symlinkSync(join(binDir, name), join(fakeBin, name));
    }
    // A stand-in that fails the way a misconfigured apiserver does; everything else is real.
    const broken = join(fakeBin, "kube-apiserver");
    writeFileSync(
      broken,
      '#!/bin/sh\necho \'E0000 run.go:72] "command failed" err="invalid flag: simulated"\'\nexit 3\n',
    );
    chmodSync(broken, 0o755);

    const dir = tempDir();
    await assert.rejects(up({ dir, binDir: fakeBin }), (error: Error) => {
      assert.match(error.message, /kube-apiserver exited during start-up/);
      assert.match(error.message, /invalid flag: simulated/);
      return true;
    });
    const state = readClusterState(dir);
    assert.ok(state !== undefined);
    assert.deepEqual(state.components, [], "a failed start records nothing as running");
    // etcd had started before the apiserver failed; its port is free again only if it was stopped.
    await assertPortFree(state.ports.etcdClient, "etcd client", "-");
  });
});
