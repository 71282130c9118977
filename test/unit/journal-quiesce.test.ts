import { strict as assert } from "node:assert";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cutConsistency, hookProblems, runQuiesced, type QuiesceHook } from "../../src/replicator/journal/quiesce.js";

function appendTo(file: string, word: string): QuiesceHook["pre"] {
  return { kind: "command", argv: ["sh", "-c", `echo ${word} >> "${file}"`] };
}

describe("journal: quiesce hooks", () => {
  let directory: string;
  let log: string;
  let server: Server;
  let url: string;
  const requests: string[] = [];

  before(async () => {
    server = createServer((request, response) => {
      requests.push(`${request.method ?? ""} ${request.url ?? ""}`);
      if (request.url === "/slow") return; // never answers
      response.statusCode = request.url === "/fail" ? 503 : 200;
      response.end(request.url === "/fail" ? "database busy" : "ok");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), "ksr-quiesce-"));
    log = join(directory, "log");
    requests.length = 0;
  });
  afterEach(() => rm(directory, { recursive: true, force: true }));

  it("runs pre hooks in order, cuts, then post hooks in reverse order", async () => {
    const hooks: QuiesceHook[] = [
      { name: "db", pre: appendTo(log, "freeze-db"), post: appendTo(log, "thaw-db"), timeoutMs: 5000 },
      { name: "fs", pre: appendTo(log, "freeze-fs"), post: appendTo(log, "thaw-fs"), timeoutMs: 5000 },
      {
        name: "api",
        pre: { kind: "http", url: `${url}/quiesce` },
        post: { kind: "http", url: `${url}/resume` },
        timeoutMs: 5000,
      },
    ];
    const cut = await runQuiesced(hooks, async (quiesced) => {
      const { appendFile } = await import("node:fs/promises");
      await appendFile(log, `cut quiesced=${quiesced}\n`);
      return "point-1";
    });
    assert.equal(cut.quiesced, true);
    assert.equal(cut.result, "point-1");
    assert.deepEqual((await readFile(log, "utf8")).trim().split("\n"), [
      "freeze-db",
      "freeze-fs",
      "cut quiesced=true",
      "thaw-fs",
      "thaw-db",
    ]);
    assert.deepEqual(requests, ["POST /quiesce", "POST /resume"]);
    assert.deepEqual(
      cut.steps.map((step) => `${step.phase}:${step.hook}:${step.ok}`),
      ["pre:db:true", "pre:fs:true", "pre:api:true", "post:api:true", "post:fs:true", "post:db:true"],
    );
  });

  it("kills a command hook at its timeout, thaws what was frozen and cuts without quiesce", async () => {
    const started = Date.now();
    const hooks: QuiesceHook[] = [
      { name: "db", pre: appendTo(log, "freeze-db"), post: appendTo(log, "thaw-db"), timeoutMs: 5000 },
      { name: "stuck", pre: { kind: "command", argv: ["sleep", "30"] }, post: appendTo(log, "never"), timeoutMs: 300 },
      { name: "later", pre: appendTo(log, "never-frozen"), timeoutMs: 5000 },
    ];
    const cut = await runQuiesced(hooks, (quiesced) => Promise.resolve(quiesced));
    assert.ok(Date.now() - started < 10_000, "the hook must not run to its end");
    assert.equal(cut.quiesced, false);
    assert.equal(cut.result, false);
    assert.deepEqual((await readFile(log, "utf8")).trim().split("\n"), ["freeze-db", "thaw-db"]);
    const stuck = cut.steps.find((step) => step.hook === "stuck");
    assert.match(stuck?.error ?? "", /timed out after 300 ms/);
  });

  it("reports a failing command with its output and an HTTP error status", async () => {
    const failing = await runQuiesced(
      [
        {
          name: "check",
          pre: { kind: "command", argv: ["sh", "-c", "echo replica lag too high >&2; exit 3"] },
          timeoutMs: 5000,
        },
      ],
      () => Promise.resolve("cut"),
    );
    assert.equal(failing.quiesced, false);
    assert.match(failing.steps[0]?.error ?? "", /code 3: replica lag too high/);
    const http = await runQuiesced([{ name: "api", pre: { kind: "http", url: `${url}/fail` }, timeoutMs: 5000 }], () =>
      Promise.resolve("cut"),
    );
    assert.equal(http.quiesced, false);
    assert.match(http.steps[0]?.error ?? "", /HTTP 503: database busy/);
    const slow = await runQuiesced([{ name: "api", pre: { kind: "http", url: `${url}/slow` }, timeoutMs: 200 }], () =>
      Promise.resolve("cut"),
    );
    assert.match(slow.steps[0]?.error ?? "", /timed out after 200 ms/);
  });

  it("rejects invalid hook lists before running anything", async () => {
    const cases: [QuiesceHook[], RegExp][] = [
      [[{ name: "", pre: appendTo(log, "x"), timeoutMs: 10 }], /name must not be empty/],
      [[{ name: "a", timeoutMs: 10 }], /needs a pre or a post/],
      [[{ name: "a", pre: { kind: "command", argv: [] }, timeoutMs: 10 }], /needs a program/],
      [[{ name: "a", pre: { kind: "http", url: "file:///etc/passwd" }, timeoutMs: 10 }], /only http and https/],
      [[{ name: "a", pre: appendTo(log, "x"), timeoutMs: 0 }], /timeoutMs/],
      [
        [
          { name: "a", pre: appendTo(log, "x"), timeoutMs: 10 },
          { name: "a", pre: appendTo(log, "y"), timeoutMs: 10 },
        ],
        /used twice/,
      ],
    ];
    for (const [hooks, problem] of cases) {
      assert.match(hookProblems(hooks).join("; "), problem);
      await assert.rejects(
        runQuiesced(hooks, () => Promise.resolve()),
        problem,
      );
    }
  });

  it("never records more consistency than the cut had", () => {
    const table: [boolean, boolean, boolean, string][] = [
      // appRequested, quiesced, writesInFlight → consistency
      [true, true, false, "app"],
      [true, false, false, "crash"],
      [true, true, true, "best-effort"],
      [false, false, false, "crash"],
      [false, false, true, "best-effort"],
      [false, true, false, "crash"],
    ];
    for (const [appRequested, quiesced, writesInFlight, expected] of table)
      assert.equal(cutConsistency({ appRequested, quiesced, writesInFlight }), expected);
  });
});
