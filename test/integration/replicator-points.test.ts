// Recovery points cut by running agents: the cadence, the consistency each cut really has, quiesce
// hooks, and consistency groups across two machines through the agents' Barrier services. Real
// gRPC with mutual TLS on loopback, real files, and the master target's undo journals.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import { appendFile, readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import {
  Consistency,
  type HoldReply,
  type HoldRequest,
  type MarkReply,
  type MarkRequest,
} from "../../src/gen/ksr/replication/v1/replication.js";
import type { PointReport } from "../../src/replicator/agent/point-cutter.js";
import { GroupCoordinator } from "../../src/replicator/group-coordinator.js";
import { GroupPointLog } from "../../src/replicator/journal/consistency-group.js";
import type { QuiesceHook } from "../../src/replicator/journal/quiesce.js";
import { agentCommonName, coordinatorCommonName } from "../../src/replicator/tls.js";
import { freePort } from "../../src/local/ports.js";
import { consistencyFromWire } from "../../src/replicator/journal/point.js";
import { eventually } from "../fixture/eventually.js";
import { fanotifyUnavailable } from "../fixture/fanotify.js";
import { barrierCall, createPointsSite, cutNow, type PointsSite } from "../fixture/points-site.js";
import { treesDiffer } from "../fixture/tree-compare.js";

describe("recovery points cut by agents (gRPC + mTLS, undo journals)", function () {
  this.timeout(60_000);

  describe("one machine", () => {
    let site: PointsSite;
    beforeEach(async () => {
      site = await createPointsSite(["m1"]);
    });
    afterEach(async () => {
      await site.close();
    });

    it("cuts crash points on its cadence; each one is the source as it was at the cut", async () => {
      await writeFile(join(site.source("m1"), "a.txt"), "first");
      const points: PointReport[] = [];
      const running = await site.startAgent("m1", {
        crashPointIntervalMs: 300,
        onPoint: (point) => points.push(point),
      });
      await eventually("three points applied", () => Promise.resolve(points.length >= 3 ? true : undefined), 20_000);
      const journaled = site.journal("m1").points();
      for (const point of points.slice(0, 3)) {
        assert.equal(point.consistency, "crash");
        assert.ok(point.appliedMs !== undefined && point.appliedMs >= point.cutMs);
        const recorded = journaled.find((candidate) => candidate.id === point.id);
        assert.ok(recorded !== undefined, `${point.id} is in the journal`);
        assert.equal(recorded.consistency, "crash");
        assert.equal(recorded.seq, point.seq);
      }
      const [first, second] = points;
      assert.ok(first !== undefined && second !== undefined);
      assert.ok(second.timeUnixMs - first.timeUnixMs >= 300, "points follow the cadence");
      // A later change never shows in an earlier point.
      const before = points.length;
      await writeFile(join(site.source("m1"), "a.txt"), "second");
      await eventually("a point after the change", () =>
        Promise.resolve(points.length >= before + 2 ? true : undefined),
      );
      const old = await site.hydrateAt("m1", first.id);
      assert.equal(await readFile(join(old, "a.txt"), "utf8"), "first");
      const latest = points.at(-1);
      assert.ok(latest !== undefined);
      assert.equal(await treesDiffer(site.source("m1"), await site.hydrateAt("m1", latest.id)), "");
      assert.match(running.logs.join("\n"), /recovery point m1-\d+-\d+: crash at seq \d+/);
      const summary = await running.stop();
      assert.ok(summary.lastSeq >= latest.seq);
    });

    // Tree scan cannot stop writes, so a busy source gives best-effort cuts; write ranges hold
    // the writes, so the same cut is crash-consistent and shows one instant of the writer.
    const busyCases: { capture: "tree-scan" | "write-ranges"; busy: Consistency }[] = [
      { capture: "tree-scan", busy: Consistency.CONSISTENCY_BEST_EFFORT },
      { capture: "write-ranges", busy: Consistency.CONSISTENCY_CRASH },
    ];
    for (const { capture, busy } of busyCases)
      it(`labels a cut under writes ${busy === Consistency.CONSISTENCY_CRASH ? "crash (writes held)" : "best-effort"} with ${capture}, crash once they stopped`, async function () {
        if (capture === "write-ranges") {
          const unavailable = await fanotifyUnavailable(site.source("m1"));
          if (unavailable !== undefined) {
            this.test!.title += ` (skipped: ${unavailable})`;
            this.skip();
          }
        }
        const running = await site.startAgent("m1", { capture });
        const client = await site.barrierClient(running.address);
        const writer = startWriterProcess(join(site.source("m1"), "busy.bin"));
        try {
          await eventually("the writer's file replicated", async () =>
            (await stat(join(site.replica("m1"), "busy.bin")).catch(() => undefined))?.size === busyFileBytes
              ? true
              : undefined,
          );
          const cut = await cutNow(client, { requested: Consistency.CONSISTENCY_CRASH });
          assert.equal(cut.consistency, busy);
          assert.equal(site.journal("m1").point(cut.pointId).consistency, consistencyFromWire(busy));
          if (busy === Consistency.CONSISTENCY_CRASH) {
            // The writer puts counter i into block i % 16: at one instant the blocks hold 16 consecutive counters.
            const content = await readFile(join(await site.hydrateAt("m1", cut.pointId), "busy.bin"));
            const counters = Array.from({ length: 16 }, (_, block) => content.readUInt32LE(block * 4096)).sort(
              (a, b) => a - b,
            );
            assert.deepEqual(
              counters,
              counters.map((_, k) => (counters[0] ?? 0) + k),
              "the point shows the writer at one instant",
            );
          }
        } finally {
          await stopProcess(writer);
        }
        const quiet = await cutNow(client, { requested: Consistency.CONSISTENCY_CRASH });
        assert.equal(quiet.consistency, Consistency.CONSISTENCY_CRASH);
        const hydrated = await site.hydrateAt("m1", quiet.pointId);
        assert.equal(await treesDiffer(site.source("m1"), hydrated), "");
        if (busy === Consistency.CONSISTENCY_BEST_EFFORT)
          assert.match(running.logs.join("\n"), /best-effort at seq \d+ \(writes were in flight at the cut\)/);
        assert.match(running.logs.join("\n"), new RegExp(`capture: ${capture} `));
      });

    it("runs pre hooks in order and post hooks in reverse; a failed or slow hook means no app point", async () => {
      const trace = join(site.work, "trace");
      await writeFile(trace, "");
      const step = (name: string, extra = ""): QuiesceHook["pre"] => ({
        kind: "command",
        argv: ["sh", "-c", `echo ${name} >> "$TRACE"${extra}`],
        env: { TRACE: trace, DB_PASSWORD: "pa55-w0rd-never-logged" },
      });
      const hooks: QuiesceHook[] = [
        { name: "db", pre: step("freeze-db"), post: step("thaw-db"), timeoutMs: 5000 },
        { name: "cache", pre: step("freeze-cache"), post: step("thaw-cache"), timeoutMs: 5000 },
      ];
      const running = await site.startAgent("m1", { hooks });
      const client = await site.barrierClient(running.address);
      const app = await cutNow(client, { requested: Consistency.CONSISTENCY_APP });
      assert.equal(app.consistency, Consistency.CONSISTENCY_APP);
      assert.equal(site.journal("m1").point(app.pointId).consistency, "app");
      assert.deepEqual(await traced(trace), ["freeze-db", "freeze-cache", "thaw-cache", "thaw-db"]);
      await running.stop();

      const [db, cache] = hooks as [QuiesceHook, QuiesceHook];
      const failures: [QuiesceHook, RegExp][] = [
        [{ ...cache, pre: step("freeze-cache", "; echo $DB_PASSWORD > /dev/null; exit 3") }, /code 3/],
        [{ ...cache, pre: step("freeze-cache", "; sleep 20"), timeoutMs: 300 }, /timed out after 300 ms/],
      ];
      for (const [broken, expected] of failures) {
        await writeFile(trace, "");
        const third: QuiesceHook = { name: "never", pre: step("freeze-never"), timeoutMs: 5000 };
        const again = await site.startAgent("m1", { hooks: [db, broken, third] });
        const cut = await cutNow(await site.barrierClient(again.address), {
          requested: Consistency.CONSISTENCY_APP,
        });
        assert.equal(cut.consistency, Consistency.CONSISTENCY_CRASH, "an ordinary cut, labelled as such");
        assert.equal(site.journal("m1").point(cut.pointId).consistency, "crash");
        // The hook that froze is thawed; the failed one and those after it never froze.
        assert.deepEqual(await traced(trace), ["freeze-db", "freeze-cache", "thaw-db"]);
        const failed = cut.hooks.find((hookStep) => !hookStep.ok);
        assert.equal(failed?.hook, "cache");
        assert.match(failed.error, expected);
        const logs = again.logs.join("\n");
        assert.match(logs, /quiesce hook "cache" pre failed/);
        assert.match(logs, /crash at seq \d+ \(asked for app; quiesce hooks failed: cache \(pre\)\)/);
        assert.doesNotMatch(logs, /pa55-w0rd/);
        await again.stop();
      }
    });

    it("releases a hold on its own when the coordinator goes away", async () => {
      const trace = join(site.work, "trace");
      const echo = (word: string): QuiesceHook["pre"] => ({
        kind: "command",
        argv: ["sh", "-c", `echo ${word} >> "${trace}"`],
      });
      const running = await site.startAgent("m1", {
        hooks: [{ name: "app", pre: echo("freeze"), post: echo("thaw"), timeoutMs: 5000 }],
      });
      const client = await site.barrierClient(running.address);
      const held = await barrierCall<HoldRequest, HoldReply>(client.hold.bind(client), {
        cutId: "abandoned",
        requested: Consistency.CONSISTENCY_APP,
        holdTimeoutMs: 1500,
        quiescedByCaller: false,
      });
      assert.equal(held.consistency, Consistency.CONSISTENCY_APP);
      assert.deepEqual(await traced(trace), ["freeze"]);
      await writeFile(join(site.source("m1"), "during-hold"), "x");
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(
        await stat(join(site.replica("m1"), "during-hold")).catch(() => undefined),
        undefined,
        "nothing captured reaches the stream while held",
      );
      await eventually("the change replicated after the hold expired", async () =>
        (await treesDiffer(site.source("m1"), site.replica("m1"))) === "" ? true : undefined,
      );
      assert.deepEqual(await traced(trace), ["freeze", "thaw"]);
      assert.match(running.logs.join("\n"), /cut abandoned: not released within 1500 ms; resuming replication/);
      const late = await barrierCall<MarkRequest, MarkReply>(client.mark.bind(client), {
        cutId: "abandoned",
        marker: {
          id: "abandoned",
          consistency: Consistency.CONSISTENCY_APP,
          timeUnixMs: Date.now(),
          consistencyGroup: "g",
        },
      }).then(
        () => undefined,
        (error: unknown) => error as ServiceError,
      );
      assert.equal(late?.code, status.FAILED_PRECONDITION);
      assert.equal(site.journal("m1").points().length, 0);
    });

    it("takes a quiet app hold the caller quiesced as app without hooks of its own, and never a crash request", async () => {
      // Tree scan: a hold that holds no writes is worth best-effort unless someone quiesced (write ranges would hold them: crash).
      const running = await site.startAgent("m1", { capture: "tree-scan" });
      const client = await site.barrierClient(running.address);
      const hold = (cutId: string, requested: Consistency, quiescedByCaller: boolean) =>
        barrierCall<HoldRequest, HoldReply>(client.hold.bind(client), {
          cutId,
          requested,
          holdTimeoutMs: 10_000,
          quiescedByCaller,
        });
      const release = (cutId: string) => barrierCall(client.release.bind(client), { cutId });
      const cases: [string, Consistency, boolean, Consistency][] = [
        ["by-caller", Consistency.CONSISTENCY_APP, true, Consistency.CONSISTENCY_APP],
        // Without the caller's quiesce and without hooks, nothing was quiesced: never app.
        ["no-hooks", Consistency.CONSISTENCY_APP, false, Consistency.CONSISTENCY_BEST_EFFORT],
        // The flag does not upgrade a cut nobody asked to be app.
        ["crash-asked", Consistency.CONSISTENCY_CRASH, true, Consistency.CONSISTENCY_BEST_EFFORT],
      ];
      for (const [cutId, requested, byCaller, expected] of cases) {
        const held = await hold(cutId, requested, byCaller);
        // A lone member's hold counts as a group member: only app survives as itself.
        assert.equal(held.consistency, expected, cutId);
        const marked = await barrierCall<MarkRequest, MarkReply>(client.mark.bind(client), {
          cutId,
          marker: { id: cutId, consistency: requested, timeUnixMs: Date.now(), consistencyGroup: "" },
        });
        await release(cutId);
        const recorded = site.journal("m1").point(cutId).consistency;
        assert.equal(recorded, requested === Consistency.CONSISTENCY_APP && byCaller ? "app" : "crash", cutId);
        assert.ok(marked.seq > 0);
      }
    });

    it("serves the Barrier service only to the coordinator and the operator", async () => {
      const running = await site.startAgent("m1");
      const intruder = await site.barrierClient(running.address, agentCommonName("m1"));
      const refused = await cutNow(intruder, { requested: Consistency.CONSISTENCY_CRASH }).then(
        () => undefined,
        (error: unknown) => error as ServiceError,
      );
      assert.equal(refused?.code, status.PERMISSION_DENIED);
      assert.match(refused.details, /may not call this service/);
    });
  });

  describe("a consistency group of two machines", () => {
    let site: PointsSite;
    let writer: CounterWriter;
    beforeEach(async () => {
      site = await createPointsSite(["g1", "g2"]);
      writer = new CounterWriter([site.source("g1"), site.source("g2")]);
      await writer.listen();
    });
    afterEach(async () => {
      await writer.close();
      await site.close();
    });

    function coordinator(
      members: { machineId: string; address: string }[],
      phaseTimeoutMs = 10_000,
      requested: "app" | "crash" = "app",
    ) {
      return GroupCoordinator.create({
        group: "shop",
        members,
        tls: site.identity(coordinatorCommonName),
        logFile: join(site.work, "group-points"),
        requested,
        phaseTimeoutMs,
        log: { warn: () => undefined },
      });
    }

    it("never shows the members disagree at an app-consistent group point", async () => {
      const agents = await Promise.all(
        ["g1", "g2"].map((machineId) => site.startAgent(machineId, { hooks: writer.hooks() })),
      );
      const group = await coordinator(
        agents.map((agent, index) => ({ machineId: `g${index + 1}`, address: agent.address })),
      );
      const writing = writer.run();
      const pointIds: string[] = [];
      try {
        for (let cut = 0; cut < 4; cut++) {
          const before = writer.counter;
          await eventually("the writer moved on", () =>
            Promise.resolve(writer.counter >= before + 3 ? true : undefined),
          );
          const result = await group.cut();
          assert.ok(result.ok, result.ok ? "" : result.reason);
          assert.equal(result.point.consistency, "app");
          assert.deepEqual(Object.keys(result.point.members).sort(), ["g1", "g2"]);
          pointIds.push(result.point.id);
        }
      } finally {
        writer.stop();
        await writing;
        group.close();
      }
      const counters = new Set<string>();
      for (const id of pointIds) {
        const [first, second] = await Promise.all(
          ["g1", "g2"].map(async (machineId) => {
            const point = site.journal(machineId).point(id);
            assert.equal(point.group, "shop");
            assert.equal(point.consistency, "app");
            return readFile(join(await site.hydrateAt(machineId, id), "counter"), "utf8");
          }),
        );
        assert.equal(first, second, `group point ${id}: g1 has ${first}, g2 has ${second}`);
        counters.add(first ?? "");
      }
      assert.equal(counters.size, pointIds.length, "every group point is a different moment of the writer");
      const logged = await new GroupPointLog(join(site.work, "group-points")).list();
      assert.deepEqual(
        logged.map((point) => point.id),
        pointIds,
      );
      assert.equal(writer.frozen, 0, "every freeze was thawed");
    });

    it("makes crash-consistent group points without hooks when write ranges hold every member's writes", async function () {
      const unavailable = await fanotifyUnavailable(site.source("g1"));
      if (unavailable !== undefined) {
        this.test!.title += ` (skipped: ${unavailable})`;
        this.skip();
      }
      const agents = await Promise.all(
        ["g1", "g2"].map((machineId) => site.startAgent(machineId, { capture: "write-ranges" })),
      );
      const group = await coordinator(
        agents.map((agent, index) => ({ machineId: `g${index + 1}`, address: agent.address })),
        10_000,
        "crash",
      );
      // Another process writes counter i to g1's file, then to g2's: at one instant g1 has i or i + 1.
      const files = ["g1", "g2"].map((machineId) => join(site.source(machineId), "counter"));
      const program = `const fs = require("fs"); const fds = ${JSON.stringify(files)}.map((f) => fs.openSync(f, "w+"));
        for (let i = 1; ; i++) for (const fd of fds) fs.writeSync(fd, String(i).padStart(12, "0"), 0);`;
      const child = spawn(process.execPath, ["-e", program], { stdio: "ignore" });
      const pointIds: string[] = [];
      try {
        await eventually("both counters replicated", async () => {
          const sizes = await Promise.all(
            ["g1", "g2"].map((m) => stat(join(site.replica(m), "counter")).catch(() => undefined)),
          );
          return sizes.every((size) => size?.size === 12) ? true : undefined;
        });
        for (let cut = 0; cut < 3; cut++) {
          const result = await group.cut();
          assert.ok(result.ok, result.ok ? "" : result.reason);
          assert.equal(result.point.consistency, "crash");
          pointIds.push(result.point.id);
        }
      } finally {
        await stopProcess(child);
        group.close();
      }
      for (const id of pointIds) {
        const [first, second] = await Promise.all(
          ["g1", "g2"].map(async (machineId) => {
            assert.equal(site.journal(machineId).point(id).consistency, "crash");
            return Number(await readFile(join(await site.hydrateAt(machineId, id), "counter"), "utf8"));
          }),
        );
        assert.ok(
          first === second || first === (second ?? 0) + 1,
          `group point ${id}: g1 has ${first}, g2 has ${second}`,
        );
      }
    });

    it("makes no group point when a member is unreachable, and releases the others", async () => {
      const agent = await site.startAgent("g1", { hooks: writer.hooks() });
      const group = await coordinator(
        [
          { machineId: "g1", address: agent.address },
          { machineId: "g2", address: `localhost:${await freePort()}` },
        ],
        2000,
      );
      try {
        const result = await group.cut();
        assert.ok(!result.ok);
        assert.match(result.reason, /hold failed: .*g2/);
      } finally {
        group.close();
      }
      assert.deepEqual(await new GroupPointLog(join(site.work, "group-points")).list(), []);
      assert.equal(site.journal("g1").points().length, 0, "the held member placed no marker");
      assert.equal(writer.frozen, 0, "the member that froze the writer thawed it");
      // Replication goes on after the release.
      await appendFile(join(site.source("g1"), "after"), "released");
      await eventually("the change after the failed cut replicated", async () =>
        (await treesDiffer(site.source("g1"), site.replica("g1"))) === "" ? true : undefined,
      );
    });
  });
});

async function traced(file: string): Promise<string[]> {
  return (await readFile(file, "utf8")).split("\n").filter((line) => line !== "");
}

const busyFileBytes = 32 * 1024 * 1024;

/**
 * A separate process that writes 4 KiB pieces into the first 64 KiB block of a 32 MiB file as
 * fast as it can until killed. The agent reads the whole file to find the changed block (tens of
 * milliseconds, far longer than the scheduler keeps a runnable writer off the CPU), so a write
 * always lands while it reads; only one block changes, so little travels.
 */
function startWriterProcess(file: string): ChildProcess {
  const program = `const fs = require("fs"); const fd = fs.openSync(${JSON.stringify(file)}, "w+");
    fs.ftruncateSync(fd, ${busyFileBytes}); const block = Buffer.alloc(4096, 7);
    for (let i = 0; ; i++) { block.writeUInt32LE(i, 0);
      fs.writeSync(fd, block, 0, 4096, 4096 * (i % 16)); }`;
  return spawn(process.execPath, ["-e", program], { stdio: "ignore" });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

/**
 * An application on two machines: it writes the same counter to a file on each, one after the
 * other, and serves freeze/thaw over HTTP (its quiesce hooks): a freeze answers once the current
 * counter is on both machines and no write runs until every freeze was thawed.
 */
class CounterWriter {
  counter = 0;
  frozen = 0;
  private stopped = false;
  private server: Server | undefined;
  private port = 0;
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly sources: readonly string[]) {}

  async listen(): Promise<void> {
    this.server = createServer((request, response) => {
      // The hook's URL carries credentials: they must arrive as a basic Authorization header.
      if (request.headers.authorization !== `Basic ${Buffer.from("user:s3cret").toString("base64")}`) {
        response.writeHead(401).end("who are you?");
      } else if (request.url === "/freeze") {
        this.frozen++;
        void this.idle.then(() => response.writeHead(200).end("frozen"));
      } else {
        this.frozen = Math.max(0, this.frozen - 1);
        response.writeHead(200).end("thawed");
      }
    });
    const server = this.server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    this.port = typeof address === "object" && address !== null ? address.port : 0;
  }

  hooks(): QuiesceHook[] {
    const url = (path: string) => `http://user:s3cret@127.0.0.1:${this.port}${path}`;
    return [
      {
        name: "counter-app",
        pre: { kind: "http", url: url("/freeze") },
        post: { kind: "http", url: url("/thaw") },
        timeoutMs: 5000,
      },
    ];
  }

  async run(): Promise<void> {
    while (!this.stopped) {
      if (this.frozen > 0) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      const next = this.counter + 1;
      this.idle = (async () => {
        for (const source of this.sources) await writeFile(join(source, "counter"), String(next).padStart(8, "0"));
      })();
      await this.idle;
      this.counter = next;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  stop(): void {
    this.stopped = true;
  }

  async close(): Promise<void> {
    this.stop();
    const server = this.server;
    if (server !== undefined) await new Promise((resolve) => server.close(resolve));
  }
}
