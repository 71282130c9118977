// The pod network's building blocks with real iproute2, without a cluster:
// the switch and a pod namespace appear and go by the cluster's names only,
// the apiserver forwarder relays over the pod network, and a switch that
// cannot be built falls back to loopback addresses with one clear warning.
import { strict as assert } from "node:assert";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { pino, type Logger } from "pino";
import { networkNames, podNamespaceName, type PodNetworkPlan } from "../../src/local/node/addresses.js";
import { apiServicePort, planPodNetwork, startPodNetwork, type PodNetwork } from "../../src/local/node/network.js";
import { clusterNetworkObjects, networkNamespaces } from "../fixture/network.js";

const run = promisify(execFile);

/** A pino logger whose lines the test can read. */
function capturingLog(): { log: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line) as (typeof lines)[0]) });
  return { log, lines };
}

/** Answers every connection with "pong " and what it was sent: a stand-in for the apiserver on loopback. */
async function echoServer(): Promise<Server> {
  const server = createServer((socket) => {
    socket.once("data", (data) => socket.end(`pong ${data.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

function exchange(host: string, port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port }, () => socket.write(message));
    let reply = "";
    socket.on("data", (chunk: Buffer) => (reply += chunk.toString()));
    socket.on("end", () => {
      resolve(reply);
    });
    socket.on("error", reject);
  });
}

describe("local node pod network building blocks", function () {
  this.timeout(20_000);
  const dir = mkdtempSync(join(tmpdir(), "ksr-netns-"));
  const names = networkNames(dir);
  const ofThisCluster = () => clusterNetworkObjects(dir);
  let network: PodNetwork | undefined;
  let apiserver: Server | undefined;
  after(async () => {
    await network?.stop();
    const server = apiserver;
    if (server !== undefined) await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("builds the switch, gives a pod a namespace with its address, relays to the apiserver, and removes it all", async () => {
    const planned = await planPodNetwork(dir);
    assert.ok("plan" in planned, `a subnet is planned where iproute2 is present: ${JSON.stringify(planned)}`);
    const { plan } = planned;
    apiserver = await echoServer();
    const { log } = capturingLog();
    network = await startPodNetwork(dir, plan, (apiserver.address() as AddressInfo).port, log);
    assert.deepEqual(
      { condition: network.condition.available, apiServer: network.apiServer },
      { condition: true, apiServer: { host: plan.hostAddress, port: apiServicePort } },
    );
    const uid = "5c1b3f0e-1111-4222-8333-944455556666";
    const sandbox = await network.attach(uid, "ksr-primary");
    const netns = podNamespaceName(dir, uid);
    assert.equal(sandbox.netnsPath, `/run/netns/${netns}`);
    const inPod = execFileSync("ip", ["-n", netns, "-4", "-o", "addr"], { encoding: "utf8" });
    assert.match(inPod, new RegExp(`eth0\\s+inet ${sandbox.podIP.replace(/\./g, "\\.")}/24`));
    assert.equal(execFileSync("ip", ["-n", netns, "-4", "route"], { encoding: "utf8" }).includes("default"), false);
    // From inside the pod's namespace, through the bridge and the host veth, to the forwarder on .254.
    // Asynchronously: the forwarder runs in this very process.
    const { stdout: relayed } = await run(
      "nsenter",
      [
        `--net=${sandbox.netnsPath}`,
        process.execPath,
        "-e",
        `const s = require("net").connect(${apiServicePort}, "${plan.hostAddress}", () => s.write("ping"));` +
          `s.on("data", (d) => process.stdout.write(d));`,
      ],
      { encoding: "utf8", timeout: 5000 },
    );
    assert.equal(relayed, "pong ping");
    assert.equal(await exchange(plan.hostAddress, apiServicePort, "from the node"), "pong from the node");
    assert.equal(ofThisCluster().length, 5, ofThisCluster().join(" "));

    await network.detach(uid, "ksr-primary");
    assert.equal(networkNamespaces().includes(netns), false);
    await network.stop();
    network = undefined;
    assert.deepEqual(ofThisCluster(), []);
  });

  it("falls back to loopback addresses with one warning when the switch cannot be built, leaving nothing behind", async () => {
    const unbuildable: PodNetworkPlan = {
      subnet: "198.19.255.0/24",
      hostAddress: "198.19.255.254",
      serviceSubnet: "198.19.254.0/24",
      switchNamespace: names.switchNamespace,
      hostInterface: "an-interface-name-too-long-for-linux",
    };
    const { log, lines } = capturingLog();
    network = await startPodNetwork(dir, unbuildable, 6443, log);
    assert.deepEqual(
      { available: network.condition.available, reason: network.condition.reason, apiServer: network.apiServer },
      { available: false, reason: "NoNetworkNamespaces", apiServer: { host: "127.0.0.1", port: 6443 } },
    );
    const warnings = lines.filter((line) => line.level === 40);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]?.msg ?? "", /network namespaces unavailable .*EndpointSlices/);
    const sandbox = await network.attach("uid-1", "ksr-primary");
    assert.deepEqual(
      { loopback: sandbox.podIP.startsWith("127."), netns: sandbox.netnsPath },
      { loopback: true, netns: undefined },
    );
    assert.deepEqual(ofThisCluster(), []);
  });
});
