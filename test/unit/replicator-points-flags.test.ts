// The agent's recovery point flags, its hooks file and the coordinator's member flag: every bad
// input is refused with an error that says what to write instead.
import { strict as assert } from "node:assert";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseHooks } from "../../src/replicator/agent/hooks-file.js";
import { parseMemberFlag } from "../../src/replicator/group-coordinator.js";
import { pointOptions } from "../../src/cli/commands/replicator-flags.js";

describe("replicator: recovery point flags", () => {
  describe("hooks file", () => {
    it("reads YAML and JSON with command and http actions", () => {
      const yaml = `
hooks:
  - name: db
    timeoutSeconds: 20
    pre: { command: [psql, -c, "select pg_backup_start('ksr')"], env: { PGPASSWORD: secret } }
    post: { command: [psql, -c, "select pg_backup_stop()"] }
  - name: app
    pre: { http: "http://127.0.0.1:8080/freeze" }
    post: { http: "http://127.0.0.1:8080/thaw", method: PUT }
`;
      assert.deepEqual(parseHooks(yaml, "hooks.yaml"), [
        {
          name: "db",
          timeoutMs: 20_000,
          pre: {
            kind: "command",
            argv: ["psql", "-c", "select pg_backup_start('ksr')"],
            env: { PGPASSWORD: "secret" },
          },
          post: { kind: "command", argv: ["psql", "-c", "select pg_backup_stop()"] },
        },
        {
          name: "app",
          timeoutMs: 60_000,
          pre: { kind: "http", url: "http://127.0.0.1:8080/freeze", method: "POST" },
          post: { kind: "http", url: "http://127.0.0.1:8080/thaw", method: "PUT" },
        },
      ]);
      const json = JSON.stringify({ hooks: [{ name: "x", pre: { command: ["sync"] } }] });
      assert.equal(parseHooks(json, "hooks.json")[0]?.name, "x");
    });

    const refused: [string, string, RegExp][] = [
      ["not a mapping", "- a\n- b", /expected a mapping with a non-empty "hooks" list/],
      ["empty list", "hooks: []", /non-empty "hooks" list/],
      ["unknown top-level key", "hooks: [{name: a, pre: {command: [x]}}]\nhook: 1", /unknown key "hook"/],
      ["typo in a hook", "hooks: [{name: a, pre: {command: [x]}, timeout: 5}]", /hooks\[0\]: unknown key "timeout"/],
      ["both command and http", "hooks: [{name: a, pre: {command: [x], http: 'http://h/'}}]", /exactly one of/],
      ["command not a list", "hooks: [{name: a, pre: {command: 'rm -rf /'}}]", /list of strings/],
      ["empty command", "hooks: [{name: a, pre: {command: []}}]", /needs a program to run/],
      ["env not strings", "hooks: [{name: a, pre: {command: [x], env: {A: 1}}}]", /env: must map names to strings/],
      ["bad method", "hooks: [{name: a, pre: {http: 'http://h/', method: DELETE}}]", /GET, POST or PUT/],
      ["no action", "hooks: [{name: a}]", /needs a pre or a post action/],
      ["duplicate name", "hooks: [{name: a, pre: {command: [x]}}, {name: a, pre: {command: [y]}}]", /used twice/],
      ["timeout too long", "hooks: [{name: a, pre: {command: [x]}, timeoutSeconds: 7200}]", /timeoutMs must be/],
      ["not a URL", "hooks: [{name: a, pre: {http: 'http//user:pw@h'}}]", /url is not a URL/],
      ["other scheme", "hooks: [{name: a, pre: {http: 'file:///etc/passwd'}}]", /only http and https/],
      ["not YAML", "hooks: [unclosed", /not YAML or JSON/],
    ];
    for (const [what, text, expected] of refused)
      it(`refuses ${what}`, () => {
        assert.throws(() => parseHooks(text, "hooks.yaml"), expected);
      });

    it("never echoes a URL that may carry credentials", () => {
      assert.throws(
        () => parseHooks("hooks: [{name: a, pre: {http: 'ht tp://user:pa55@h'}}]", "hooks.yaml"),
        (error: Error) => !error.message.includes("pa55"),
      );
    });
  });

  describe("agent point cadences", () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "ksr-point-flags-"));
      await writeFile(join(dir, "hooks.yaml"), "hooks: [{name: a, pre: {command: [sync]}}]");
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    const cases: [string, Parameters<typeof pointOptions>[0], number | RegExp, number | undefined][] = [
      ["the defaults", { crashPointInterval: "5m" }, 300_000, undefined],
      ["the shortest crash cadence", { crashPointInterval: "30s" }, 30_000, undefined],
      ["the longest crash cadence", { crashPointInterval: "1h" }, 3_600_000, undefined],
      ["a crash cadence below 30s", { crashPointInterval: "10s" }, /must be between 30s and 60m/, undefined],
      ["a crash cadence above 1h", { crashPointInterval: "2h" }, /must be between 30s and 60m/, undefined],
      ["a crash cadence without a unit", { crashPointInterval: "300" }, /expected a duration like 30s/, undefined],
      ["app points without hooks", { crashPointInterval: "5m", appPointInterval: "1h" }, /needs --hooks-file/, 0],
      [
        "hooks: app points hourly by default",
        { crashPointInterval: "5m", hooksFile: "hooks.yaml" },
        300_000,
        3_600_000,
      ],
      [
        "hooks with app points off",
        { crashPointInterval: "5m", hooksFile: "hooks.yaml", appPointInterval: "off" },
        300_000,
        undefined,
      ],
      [
        "an app cadence below 1m",
        { crashPointInterval: "5m", hooksFile: "hooks.yaml", appPointInterval: "30s" },
        /--app-point-interval "30s": must be between 60s and 1440m/,
        0,
      ],
    ];
    for (const [what, flags, crash, app] of cases)
      it(`${crash instanceof RegExp ? "refuses" : "accepts"} ${what}`, async () => {
        const withPaths = {
          ...flags,
          ...(flags.hooksFile === undefined ? {} : { hooksFile: join(dir, flags.hooksFile) }),
        };
        if (crash instanceof RegExp) {
          await assert.rejects(pointOptions(withPaths), crash);
          return;
        }
        const parsed = await pointOptions(withPaths);
        assert.equal(parsed.crashPointIntervalMs, crash);
        assert.equal(parsed.appPointIntervalMs, app);
        assert.equal(parsed.hooks.length, flags.hooksFile === undefined ? 0 : 1);
      });
  });

  describe("coordinator --member", () => {
    it("takes MACHINE_ID=HOST:PORT", () => {
      assert.deepEqual(parseMemberFlag("db-1=10.0.0.7:7443"), { machineId: "db-1", address: "10.0.0.7:7443" });
    });
    for (const bad of ["db-1", "=host:1", "db-1=host", "db-1=host:port", "db 1=host:1"])
      it(`refuses ${JSON.stringify(bad)}`, () => {
        assert.throws(() => parseMemberFlag(bad), /--member|machine id/i);
      });
  });
});
