// `npm run demo` in its reduced form (--small: fewer orders before protecting, a shorter warm-up),
// on the suite's shared `ksr local` cluster (--dir) and in a namespace of the test's own: the same
// steps as the full demo and the unplanned failover of --unplanned, asserted on what it printed
// and on what it left behind.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { apiDurationMs } from "../../src/util/duration.js";
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

describe("npm run demo --small --unplanned (e2e)", function () {
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
    printed = await runDemo(["--dir", cluster.state.dir, "--namespace", shop, "--small", "--unplanned"]);
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
      "unplanned failover",
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
        "unplanned failover + commit",
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

  it("the unplanned failover recovers a prefix of what the writer acknowledged, reports its RTO and a window the writer's log bounds, and the returning source stays fenced", () => {
    const rows = closingTable(printed.out);
    const [, rto = "", dataLoss = ""] = rows.get("unplanned failover + commit") ?? [];
    assert.match(rto, /^(\d+[hms])+$/, `the unplanned run has a measured RTO: ${rto}`);
    const runWindowMs = apiDurationMs(dataLoss);
    assert.ok(runWindowMs !== undefined, `the unplanned run reports its data-loss window: ${dataLoss}`);

    const prefix =
      /the (\d+) orders recovered into \S+ \(point .*\) are a prefix of the (\d+) the source acknowledged/.exec(
        printed.out,
      );
    assert.ok(prefix !== null, printed.out);
    const [recovered, acknowledged] = [Number(prefix[1]), Number(prefix[2])];
    const failback = numbers(printed.out, /writes held at (\d+) orders in /g)[1] ?? 0;
    assert.ok(recovered >= failback, `the ${failback} orders of the failback are among the ${recovered} recovered`);
    assert.ok(recovered <= acknowledged + 1, `${recovered} recovered of ${acknowledged} acknowledged (+1 in flight)`);

    const writer =
      /data lost measured against the writer's log: (\d+\.\d) s \((\d+) acknowledged orders\); the run's status\.dataLossWindow: (\S+); RTO (\S+)/.exec(
        printed.out,
      );
    assert.ok(writer !== null, printed.out);
    const [writerMs, lostOrders] = [Number(writer[1]) * 1000, Number(writer[2])];
    assert.equal(writer[3], dataLoss, "the say() line and the table show the run's window alike");
    assert.equal(writer[4], rto);
    assert.ok(recovered + lostOrders >= acknowledged, "every acknowledged order not recovered is counted as lost");
    // 5 orders a second: the orders lost and the span they cover agree.
    assert.ok(lostOrders <= (writerMs / 1000) * 5 + 5, `${lostOrders} orders lost in ${writerMs} ms`);
    // The run's window is what the recovery site held past the point; the writer's log bounds it
    // (the point's time and the status are whole seconds: 2 s of rounding).
    assert.ok(runWindowMs <= writerMs + 2000, `run window ${runWindowMs} ms, writer's ${writerMs} ms`);
    assert.match(
      printed.out,
      new RegExp(`Unplanned failover: the writer's own log puts the data lost at ${writer[1]} s`),
    );

    assert.match(
      printed.out,
      /node ksr-primary is Ready and the source stays fenced: no pod of the shop or its agents in /,
    );
    assert.doesNotMatch(printed.out, /site is still down/);
    // The figures, for the record of a run: the demo's own lines go to the test's pipe, not the console.
    const steps = /^steps: .*$/m.exec(printed.out)?.[0] ?? "";
    process.stdout.write(
      `      unplanned: RTO ${rto}, status.dataLossWindow ${dataLoss}, writer's log ${writer[1]} s (${lostOrders} orders); ${steps}\n`,
    );
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
