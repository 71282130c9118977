// `npm run demo` in its reduced form (--small: fewer orders before protecting, a shorter warm-up),
// on the suite's shared `ksr local` cluster (--dir) and in a namespace of the test's own: the same
// steps as the full demo, asserted on what it printed and on what it left behind.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { namespaces, KubeClient } from "../../src/runtime/index.js";
import { useOperator } from "../fixture/operator.js";

const demoMain = fileURLToPath(new URL("../../src/demo/main.js", import.meta.url));

interface Printed {
  code: number | null;
  out: string;
}

function runDemo(args: string[]): Promise<Printed> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [demoMain, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      resolve({ code, out });
    });
  });
}

/** The numbers the first capture group matched, in order. */
const numbers = (out: string, pattern: RegExp) => [...out.matchAll(pattern)].map((match) => Number(match[1]));

/** The closing table's rows by operation: RPO before, RTO, data loss, bytes moved, took (columns are two spaces apart). */
function closingTable(out: string): Map<string, string[]> {
  const lines = out.split("\n");
  const header = lines.findIndex((line) => /^operation {2,}RPO before {2,}RTO/.test(line));
  assert.ok(header >= 0, `the closing table is printed:\n${out}`);
  const rows = new Map<string, string[]>();
  for (const line of lines.slice(header + 2)) {
    if (line.trim() === "") break;
    const [operation = "", ...figures] = line.split(/ {2,}/);
    rows.set(operation, figures);
  }
  return rows;
}

describe("npm run demo --small (e2e)", function () {
  this.timeout(40 * 60_000);
  const cluster = useOperator("demo");
  const shop = `demo-${process.pid}`;
  let printed: Printed;

  before(async function () {
    this.timeout(40 * 60_000);
    assert.equal(
      cluster.state.kubeconfig,
      join(cluster.state.dir, "kubeconfig"),
      "the demo finds the kubeconfig in --dir",
    );
    printed = await runDemo(["--dir", cluster.state.dir, "--namespace", shop, "--small"]);
  });

  it("runs every step to the end, reusing the running cluster and operator", () => {
    assert.equal(printed.code, 0, printed.out);
    assert.match(printed.out, new RegExp(`reusing the cluster running in ${cluster.state.dir}`));
    const finished = [...printed.out.matchAll(/^✔ ([a-z ]+):.* \((\d+\.\d) s\)$/gm)].map((match) => match[1]);
    assert.deepEqual(finished, [
      "cluster",
      "operator",
      "shop",
      "protect",
      "drill",
      "planned failover",
      "reprotect",
      "failback",
      "reprotect",
    ]);
    assert.doesNotMatch(printed.out, /^✘/m);
    assert.match(printed.out, /^steps: .*; wall time \d+\.\d s$/m);
  });

  it("the drilled database, read inside the drill namespace, holds the orders of the point", () => {
    const held = numbers(printed.out, /load held at (\d+) orders/g);
    const drilled = numbers(printed.out, new RegExp(`the drilled database in ${shop}-drill has (\\d+) orders`, "g"));
    assert.equal(held.length, 1, printed.out);
    assert.ok((held[0] ?? 0) >= 20, `at least the reduced demo's 20 orders: ${held[0]}`);
    assert.deepEqual(drilled, held);
  });

  it("the planned failover and the failback lose no order, and their runs report 0s of data loss", () => {
    const before = numbers(printed.out, /writes held at (\d+) orders in /g);
    const after = numbers(printed.out, /with all (\d+) orders; committing/g);
    assert.equal(before.length, 2, printed.out);
    assert.deepEqual(after, before);
    assert.ok((before[1] ?? 0) > (before[0] ?? 0), "the shop took orders on the recovery site between the two runs");
    const rows = closingTable(printed.out);
    assert.deepEqual(
      [...rows.keys()],
      [
        "protect (initial replication)",
        "drill (test failover)",
        "planned failover + commit",
        "reprotect (recovery → primary)",
        "failback (planned) + commit",
        "reprotect (primary → recovery)",
      ],
      printed.out,
    );
    for (const operation of ["planned failover + commit", "failback (planned) + commit"]) {
      const [, rto, dataLoss] = rows.get(operation) ?? [];
      assert.equal(dataLoss, "0s", `${operation}: ${rows.get(operation)?.join(" | ")}`);
      assert.match(rto ?? "", /^(\d+[hms])+$/, `${operation} has a measured RTO`);
    }
    assert.match(rows.get("drill (test failover)")?.[1] ?? "", /^(\d+[hms])+$/, "the drill has a measured RTO");
    assert.match(rows.get("protect (initial replication)")?.[3] ?? "", /^\d+\.\d MiB$/, "the initial copy's bytes");
  });

  it("removes the shop at the end, leaving the cluster and the operator running", async () => {
    assert.match(printed.out, /removed the shop; the cluster and the operator keep running/);
    const client = new KubeClient(cluster.kubeConfig);
    try {
      for (const name of [shop, `${shop}-recovery`, `${shop}-drill`])
        assert.equal(await client.get(namespaces, name), undefined, `namespace ${name} is gone`);
    } finally {
      client.close();
    }
  });
});
