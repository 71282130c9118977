// `ksr local down` must leave nothing running: not the node agent, not a
// container, not a process a container forked into the background, not a
// network namespace or veth of the cluster; and what `down` and `up` keep: a
// site that is down stays down, and pods that come back count a restart.
// Uses a cluster of its own, since it stops it.
import { execFileSync } from "node:child_process";
import { strict as assert } from "node:assert";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api } from "@kubernetes/client-node";
import { down, readClusterState, up, type ClusterState } from "../../src/local/cluster.js";
import { networkNames } from "../../src/local/node/addresses.js";
import { nodeLayout } from "../../src/local/node/layout.js";
import { isRunning, killNow, type ProcessRecord } from "../../src/local/processes.js";
import { kubeConfigFor } from "../fixture/cluster.js";
import { ksr } from "../fixture/ksr-cli.js";
import { clusterNetworkObjects, networkNamespaces } from "../fixture/network.js";
import { idle, shellContainer, waitFor, waitForDefaultServiceAccount } from "./local-node-helpers.js";

function recordedContainers(state: ClusterState): ProcessRecord[] {
  const dir = nodeLayout(state.dir).processes;
  return readdirSync(dir).map((file) => JSON.parse(readFileSync(join(dir, file), "utf8")) as ProcessRecord);
}

/** Every pid whose environment carries the marker: the containers and whatever they forked. */
function pidsWithMarker(marker: string): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe("ksr local down with pods running (e2e)", function () {
  this.timeout(180_000);
  let state: ClusterState | undefined;
  const dir = mkdtempSync(join(tmpdir(), "ksr-node-down-"));
  const names = networkNames(dir);
  const ofThisCluster = () => clusterNetworkObjects(dir);
  // A crashed earlier run's pod namespace, and one that merely looks alike and is not the cluster's.
  const leftover = `${names.podNamespacePrefix}0123456789ab`;
  const lookalike = `${names.switchNamespace}x`;
  after(async () => {
    for (const record of state?.components ?? []) killNow(record);
    await down({ dir }).catch(() => undefined);
    for (const name of [leftover, lookalike].filter((n) => networkNamespaces().includes(n)))
      execFileSync("ip", ["netns", "delete", name]);
    rmSync(dir, { recursive: true, force: true });
  });

  it("stops the node agent, every container and every process they started, and removes the cluster's network", async () => {
    for (const name of [leftover, lookalike]) execFileSync("ip", ["netns", "add", name]);
    state = await up({ dir, readyTimeoutMs: 180_000 });
    assert.equal(networkNamespaces().includes(leftover), false, "up removes what a crashed run left behind");
    const agent = state.components.find((c) => c.name === "node-agent");
    assert.ok(agent !== undefined && isRunning(agent), "node-agent is started and recorded by up()");
    const core = kubeConfigFor(state).makeApiClient(CoreV1Api);
    await waitForDefaultServiceAccount(core, "default");
    const marker = `KSR_DOWN_TEST=${process.pid}`;
    const env = [{ name: "KSR_DOWN_TEST", value: String(process.pid) }];
    for (const site of ["primary", "recovery"]) {
      await core.createNamespacedPod({
        namespace: "default",
        body: {
          metadata: { name: `forker-${site}` },
          spec: {
            nodeSelector: { "topology.dr.ksr.io/site": site },
            // A background child in its own session escapes a process group, not the container's cgroup.
            containers: [shellContainer("main", `setsid sleep 600 & ${idle}`, { env })],
          },
        },
      });
    }
    const pids = await waitFor("two containers and their background children", () => {
      const found = pidsWithMarker(marker);
      return Promise.resolve(found.length >= 4 ? found : undefined);
    });
    const containers = recordedContainers(state);
    assert.equal(containers.filter((c) => c.name.startsWith("forker-")).length, 2);
    assert.equal(
      ofThisCluster().length,
      8,
      `core and two node namespaces, host veth, the two forkers' and the two CoreDNS pods' namespaces: ${ofThisCluster().join(" ")}`,
    );

    const stopped = await down({ dir });
    assert.ok(stopped.some((c) => c.name === "node-agent"));
    assert.deepEqual(pidsWithMarker(marker), [], `processes of ${pids.join(", ")} left behind`);
    assert.deepEqual(
      [...state.components, ...containers].filter(isRunning).map((c) => c.name),
      [],
    );
    assert.deepEqual(ofThisCluster(), []);
    assert.ok(networkNamespaces().includes(lookalike), "names outside the cluster's prefix are left alone");
  });

  it("keeps a site down across down and up, and counts each cold start as a container restart", async () => {
    // The first case stopped the cluster with both forkers running: starting it is their cold start.
    state = await up({ dir, readyTimeoutMs: 180_000 });
    const core = kubeConfigFor(state).makeApiClient(CoreV1Api);
    const forker = (site: string) => core.readNamespacedPod({ name: `forker-${site}`, namespace: "default" });
    const restartedTo = (site: string, count: number) =>
      waitFor(`forker-${site} running again with restartCount ${count}`, async () => {
        const pod = await forker(site);
        const status = pod.status?.containerStatuses?.[0];
        return status?.restartCount === count && status.state?.running !== undefined ? pod : undefined;
      });
    for (const site of ["primary", "recovery"]) {
      const last = (await restartedTo(site, 1)).status?.containerStatuses?.[0]?.lastState?.terminated;
      assert.deepEqual([last?.exitCode, last?.reason], [255, "Unknown"], "the run that was running when it stopped");
    }
    // Container records are named after the pod's hostname.
    const recoveryRunning = () =>
      recordedContainers(state ?? assert.fail()).filter((r) => r.name === "forker-recovery" && isRunning(r));

    assert.equal((await ksr(["local", "site", "down", "recovery", "--mode", "power", "--dir", dir])).code, 0);
    await down({ dir });
    const stoppedStatus = await ksr(["local", "status", "--dir", dir]);
    assert.match(stoppedStatus.stdout, /site recovery\s+node ksr-recovery\s+down \(power\)/);

    const restart = await ksr(["local", "up", "--dir", dir]);
    state = readClusterState(dir);
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stderr, /site recovery is down \(power\) since .*ksr local site up recovery/);
    await restartedTo("primary", 2);
    assert.deepEqual(recoveryRunning(), [], "nothing of the down site runs after up");
    assert.equal((await forker("recovery")).status?.containerStatuses?.[0]?.restartCount, 1);

    assert.equal((await ksr(["local", "site", "up", "recovery", "--dir", dir])).code, 0);
    await restartedTo("recovery", 2);
    assert.notDeepEqual(recoveryRunning(), []);
  });
});
