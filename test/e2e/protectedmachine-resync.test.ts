// Resync on the policy's schedule, end to end on `ksr local`: `kubectl dr resync` orders a
// block-hash resync; under an Automatic policy whose window is closed it waits (phase
// Resynchronizing, the reason saying when, the RPO growing); `kubectl patch` moves the window to
// open at the next whole minute, and the resync starts then, on the operator's clock; under a
// Manual policy the request itself runs it. Progress and the result in status. The window's
// arithmetic (time zones, days, midnight) is table-tested on a fake clock in
// test/unit/protectedmachine-resync.test.ts.
import { strict as assert } from "node:assert";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { protectedMachines, type ProtectedMachine, type ReplicationPolicy } from "../../src/api/types.js";
import { policyDurationMs } from "../../src/controllers/replicationpolicy/flags.js";
import { KubeClient } from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { eventsAbout, kubectlDr } from "../fixture/machine-suite.js";
import { protectedMachine, useRecoverySuite } from "../fixture/recovery-suite.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { appendSmall, resyncPolicy, writerStatefulSet } from "../fixture/writer.js";

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
const minuteMs = 60_000;

describe("resync on the policy's schedule (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useRecoverySuite("rsy");
  let client: KubeClient;
  let control: string;
  let ns: string;
  let target: string;
  let windowStart = 0;

  const policy = (name: string, resync: ReplicationPolicy["spec"]["resync"]) => resyncPolicy(name, ns, resync);
  const until = <T>(what: string, name: string, check: (m: ProtectedMachine) => T | undefined, timeoutMs?: number) =>
    cluster.untilMachine(ns, name, what, check, timeoutMs);
  const dr = (...args: string[]) => kubectlDr(cluster.state.kubeconfig, ns, ...args);
  const reasons = async (name: string) => (await eventsAbout(client, ns, name)).map((event) => event.reason);
  const writing = (name: string, on: boolean) =>
    on ? writeFile(join(control, name, "write"), "") : rm(join(control, name, "write"), { force: true });
  /** A window of half an hour from `start` (whole minutes, UTC), every day. */
  const windowAt = (start: number) => ({ start: hhmm(start), end: hhmm(start + 30 * minuteMs), timeZone: "UTC" });

  before(async function () {
    ({ client, control } = cluster);
    ns = cluster.namespace;
    target = `${ns}-dr`;
    await cluster.openNamespaces(ns, target);
    // Closed for as long as the test runs: the window opens twelve hours from now.
    windowStart = Math.ceil(Date.now() / minuteMs) * minuteMs + 12 * 60 * minuteMs;
    await cluster.apply(policy("windowed", { mode: "Automatic", window: windowAt(windowStart) }));
    // An idle agent hears of a requested resync on its next push; points every 30 s keep that
    // prompt (under the 5-minute cadence the request waited for the first point).
    const manual = policy("manual", { mode: "Manual" });
    await cluster.apply({ ...manual, spec: { ...manual.spec, crashConsistentFrequency: "30s" } });
    for (const name of ["nightly", "manual"]) {
      await cluster.apply(writerStatefulSet({ name, namespace: ns, mib: 8, control, whileWriting: appendSmall }));
      await cluster.apply(
        protectedMachine({ name, namespace: ns, target, policy: name === "nightly" ? "windowed" : "manual" }),
      );
    }
  });

  it("defers a resync until the policy's window opens: Resynchronizing with the reason and time, the RPO growing, then it runs", async () => {
    await until("nightly Protected", "nightly", (m) => (m.status?.phase === "Protected" ? m : undefined));
    await writing("nightly", true);
    await dr("resync", "nightly");
    const waiting = await until("the resync waiting for the window", "nightly", (m) =>
      m.status?.resync?.state === "Waiting" ? m : undefined,
    );
    assert.equal(waiting.status?.phase, "Resynchronizing");
    assert.equal(waiting.status.resync?.nextStartTime, new Date(windowStart).toISOString().replace(".000", ""));
    const ready = waiting.status.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.reason, "ResyncWaitingForWindow");
    assert.match(ready.message, new RegExp(`window \\(${hhmm(windowStart)}-.* UTC, every day\\) opens at `));
    // Changes are not shipped meanwhile: the RPO grows.
    const rpo = (m: ProtectedMachine) => policyDurationMs(m.status?.rpo ?? "0s", "rpo");
    const first = rpo(waiting);
    const later = await until("the RPO to grow by 10 s", "nightly", (m) =>
      m.status?.resync?.state === "Waiting" && rpo(m) >= first + 10_000 ? m : undefined,
    );
    assert.equal(later.status?.phase, "Resynchronizing");
    await writing("nightly", false);

    // The user moves the window to open at the next whole minute: the resync waits for it, then runs.
    const opening = Math.ceil((Date.now() + 5_000) / minuteMs) * minuteMs;
    const patched = await cluster.kubectl([
      ...["-n", ns, "patch", "replicationpolicy", "windowed", "--type", "merge"],
      ...["-p", JSON.stringify({ spec: { resync: { window: windowAt(opening) } } })],
    ]);
    assert.equal(patched.code, 0, patched.stderr);
    const done = await until(
      `the resync completed after the window opened at ${hhmm(opening)}`,
      "nightly",
      (m) => (m.status?.resync?.state === "Completed" && m.status.phase === "Protected" ? m : undefined),
      10 * 60_000,
    );
    const resync = done.status?.resync;
    assert.ok(resync?.startTime !== undefined && Date.parse(resync.startTime) >= opening, JSON.stringify(resync));
    assert.ok((resync.bytesTotal ?? 0) >= 8 * 1024 * 1024, JSON.stringify(resync));
    assert.equal(resync.bytesCompared, resync.bytesTotal);
    const list = await reasons("nightly");
    for (const reason of ["ResyncRequested", "ResyncWaitingForWindow", "ResyncCompleted"])
      assert.ok(list.includes(reason), `events: ${list.join(", ")}`);
    const source = await cluster.volumeDir(ns, "data-nightly-0", "ksr-primary");
    const replica = await cluster.volumeDir(target, "data-nightly-0", "ksr-recovery");
    await eventually(
      "the replica to equal the source",
      async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
      3 * 60_000,
      { describe: () => treesDiffer(source, replica), intervalMs: 2000 },
    );
  });

  it("runs a manual resync on kubectl dr resync and sends only what differs", async () => {
    await until("manual Protected", "manual", (m) => (m.status?.phase === "Protected" ? m : undefined));
    await dr("resync", "manual");
    const requested = (await client.get(protectedMachines, "manual", ns))?.metadata.annotations?.[
      "dr.ksr.io/resync-requested-at"
    ];
    assert.ok(requested !== undefined);
    const done = await until("the manual resync completed", "manual", (m) =>
      m.status?.resync?.state === "Completed" && m.status.phase === "Protected" ? m : undefined,
    );
    const resync = done.status?.resync;
    assert.equal(resync?.requestedAt, requested, "the request it served");
    assert.ok((resync.bytesTotal ?? 0) >= 8 * 1024 * 1024, JSON.stringify(resync));
    // The replica already matched: the comparison read everything and sent almost nothing.
    assert.ok((resync.bytesSent ?? 0) < (resync.bytesTotal ?? 0) / 10, JSON.stringify(resync));
    const list = await reasons("manual");
    assert.ok(list.includes("ResyncRequested") && list.includes("ResyncCompleted"), list.join(", "));
    assert.ok(!list.includes("ResyncWaitingForRequest"), "the request itself was the go-ahead");
  });
});
