import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isRunning, logTail, spawnDetached, stopProcess } from "../../src/local/processes.js";
import { parsePort } from "../../src/local/ports.js";

describe("local processes", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ksr-proc-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("identifies a process by pid and start time, so a recycled pid is not ours", async () => {
    const record = spawnDetached({ name: "sleeper", command: "sleep", args: ["30"], logFile: join(dir, "s.log") });
    try {
      assert.ok(record.startTicks > 0);
      assert.equal(isRunning(record), true);
      assert.equal(isRunning({ ...record, startTicks: record.startTicks + 1 }), false, "same pid, other start time");
    } finally {
      await stopProcess(record, 2000);
    }
    assert.equal(isRunning(record), false);
  });

  it("escalates to SIGKILL when a process ignores SIGTERM past its grace period", async () => {
    const record = spawnDetached({
      name: "stubborn",
      command: "sh",
      args: ["-c", "trap 'echo ignored TERM' TERM; echo started; while :; do sleep 0.05; done"],
      logFile: join(dir, "stubborn.log"),
    });
    while (!logTail(record.logFile).includes("started")) await sleep(20);
    const begun = Date.now();
    await stopProcess(record, 300);
    assert.equal(isRunning(record), false);
    assert.ok(Date.now() - begun >= 300, "waited for the grace period before SIGKILL");
    assert.match(logTail(record.logFile), /ignored TERM/);
  });

  it("returns the last lines of a log, or says there is none", () => {
    const record = spawnDetached({
      name: "echo",
      command: "sh",
      args: ["-c", "seq 1 50"],
      logFile: join(dir, "e.log"),
    });
    assert.ok(record.pid > 0);
    assert.equal(logTail(join(dir, "missing.log")), "(no log written)");
  });
});

describe("parsePort", () => {
  const cases: [string, number | RegExp][] = [
    ["6443", 6443],
    ["1", 1],
    ["65535", 65535],
    ["0", /from 1 to 65535, got "0"/],
    ["65536", /got "65536"/],
    ["-1", /got "-1"/],
    ["64.5", /got "64.5"/],
    ["http", /--api-port must be a whole number/],
  ];
  for (const [input, expected] of cases) {
    it(`${input} → ${String(expected)}`, () => {
      if (typeof expected === "number") assert.equal(parsePort(input, "--api-port"), expected);
      else assert.throws(() => parsePort(input, "--api-port"), expected);
    });
  }
});
