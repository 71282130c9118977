// The pure parts of the operator's own points and of the resync schedule: which hooks the
// operator runs, when it cuts, how an exec's Status becomes an exit code, and the policy's resync
// window in its time zone.
import { strict as assert } from "node:assert";
import type { ProtectedMachine, QuiesceSpec, ReplicationPolicy, ResyncWindow } from "../../src/api/types.js";
import { cutCadence, isProblem, quiesceMode, type CutMember } from "../../src/controllers/protectedmachine/quiesce.js";
import { checkTimeZone, inWindow, nextOpening } from "../../src/controllers/protectedmachine/resync-window.js";
import { ExecError } from "../../src/runtime/index.js";
import { exitCodeOf } from "../../src/runtime/pod-exec.js";

const exec = (phase: string) => ({ exec: { container: "db", command: ["sh", "-c", phase] } });
const http = { http: { port: 8080, path: "/freeze", scheme: "HTTP" as const, method: "POST" as const } };
const spec = (
  pre: QuiesceSpec["pre"],
  post?: QuiesceSpec["post"],
  onFailure: QuiesceSpec["onFailure"] = "TakeCrashConsistent",
): QuiesceSpec => ({
  pre,
  ...(post === undefined ? {} : { post }),
  timeout: "20s",
  onFailure,
});

describe("operator-cut points: hooks and cadence", () => {
  it("runs exec hooks itself, leaves HTTP hooks to the agent, and refuses a mix with a message naming the fix", () => {
    const cases: [string, QuiesceSpec | undefined, string][] = [
      ["no hooks", undefined, "none"],
      ["http pre and post", spec(http, http), "agent"],
      ["exec pre and post", spec(exec("freeze"), exec("thaw")), "exec"],
      ["exec pre only", spec(exec("freeze")), "exec"],
      ["exec pre, http post", spec(exec("freeze"), http), "MixedQuiesceHooks"],
      ["http pre, exec post", spec(http, exec("thaw")), "MixedQuiesceHooks"],
    ];
    for (const [name, quiesce, expected] of cases) {
      const mode = quiesceMode(quiesce);
      assert.equal(isProblem(mode) ? mode.reason : mode.kind, expected, name);
      if (isProblem(mode)) assert.match(mode.message, /both exec .* or both http/, name);
    }
    const mode = quiesceMode(spec(exec("freeze"), exec("thaw"), "SkipPoint"));
    assert.ok(!isProblem(mode) && mode.kind === "exec");
    assert.equal(mode.timeoutMs, 20_000);
    assert.equal(mode.skipOnFailure, true);
  });

  const policy = (appConsistentFrequency?: string): ReplicationPolicy => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ReplicationPolicy",
    metadata: { name: "p", namespace: "app" },
    spec: {
      rpoThreshold: "5m",
      recoveryPointRetention: "24h",
      crashConsistentFrequency: "5m",
      ...(appConsistentFrequency === undefined ? {} : { appConsistentFrequency }),
      capture: "Continuous",
      compression: "zstd",
      resync: { mode: "Automatic" },
    },
  });
  const member = (quiesce: QuiesceSpec | undefined, group?: string): CutMember => {
    const mode = quiesceMode(quiesce);
    assert.ok(!isProblem(mode));
    return {
      machine: {
        apiVersion: "dr.ksr.io/v1alpha1",
        kind: "ProtectedMachine",
        metadata: { name: "m", namespace: "app" },
        spec: {
          policyRef: { name: "p" },
          source: { workloadRef: { kind: "StatefulSet", name: "m" } },
          target: { site: "recovery", namespace: "dr" },
          paused: false,
          ...(group === undefined ? {} : { consistencyGroup: group }),
        },
      } satisfies ProtectedMachine,
      mode,
      pods: ["m-0"],
      streams: [],
    };
  };

  it("cuts app points for exec machines and groups, crash points for groups without hooks, nothing the agent cuts itself", () => {
    const hooks = spec(exec("freeze"), exec("thaw"));
    const cases: [string, string | undefined, CutMember[], { requested: string; everyMs: number } | undefined][] = [
      ["exec machine, app cadence", "10m", [member(hooks)], { requested: "app", everyMs: 600_000 }],
      ["exec machine, no app cadence: its agent cuts crash points", undefined, [member(hooks)], undefined],
      ["http machine: its agent cuts app points", "10m", [member(spec(http, http))], undefined],
      ["machine without hooks", "10m", [member(undefined)], undefined],
      [
        "group with hooks everywhere",
        "10m",
        [member(hooks, "g"), member(spec(http, http), "g")],
        { requested: "app", everyMs: 600_000 },
      ],
      [
        "group with a member without hooks",
        "10m",
        [member(hooks, "g"), member(undefined, "g")],
        { requested: "crash", everyMs: 300_000 },
      ],
      [
        "group without app cadence",
        undefined,
        [member(hooks, "g"), member(hooks, "g")],
        { requested: "crash", everyMs: 300_000 },
      ],
    ];
    for (const [name, frequency, members, expected] of cases)
      assert.deepEqual(cutCadence(policy(frequency), members), expected, name);
  });

  it("reads the exit code from the exec's final Status, and anything else as a failure to run", () => {
    assert.equal(exitCodeOf({ status: "Success" }), 0);
    assert.equal(
      exitCodeOf({
        status: "Failure",
        reason: "NonZeroExitCode",
        message: "command terminated with non-zero exit code",
        details: { causes: [{ reason: "ExitCode", message: "3" }] },
      }),
      3,
    );
    const refused = exitCodeOf({ status: "Failure", reason: "InternalError", message: 'container "nope" not found' });
    assert.ok(refused instanceof ExecError);
    assert.match(refused.message, /container "nope" not found/);
    assert.ok(
      exitCodeOf({ status: "Failure", reason: "NonZeroExitCode" }) instanceof ExecError,
      "no code: not an exit",
    );
  });
});

describe("the policy's resync window", () => {
  const at = (iso: string) => Date.parse(iso);
  const night: ResyncWindow = { start: "22:00", end: "06:00", timeZone: "Europe/Berlin", days: ["Friday"] };
  const office: ResyncWindow = { start: "09:00", end: "17:00", timeZone: "America/New_York" };

  it("opens in its own time zone, on its days, across midnight on the day it opened", () => {
    const cases: [string, ResyncWindow, string, boolean][] = [
      // 2026-12-04 is a Friday; Berlin is UTC+1 in December.
      ["Friday 22:30 Berlin", night, "2026-12-04T21:30:00Z", true],
      ["Friday 21:59 Berlin", night, "2026-12-04T20:59:00Z", false],
      ["Saturday 05:59 Berlin: Friday's window", night, "2026-12-05T04:59:00Z", true],
      ["Saturday 06:00 Berlin: closed", night, "2026-12-05T05:00:00Z", false],
      ["Saturday 22:30 Berlin: not a window day", night, "2026-12-05T21:30:00Z", false],
      ["Friday 01:00 Berlin: Thursday did not open", night, "2026-12-04T00:00:00Z", false],
      ["09:00 New York (UTC-5)", office, "2026-12-01T14:00:00Z", true],
      ["17:00 New York: the end is exclusive", office, "2026-12-01T22:00:00Z", false],
      ["08:59 New York", office, "2026-12-01T13:59:00Z", false],
    ];
    for (const [name, window, time, expected] of cases) assert.equal(inWindow(window, at(time)), expected, name);
  });

  it("names the next opening: now when open, else the first minute inside", () => {
    assert.equal(nextOpening(night, at("2026-12-01T10:00:00Z")), at("2026-12-04T21:00:00Z"));
    assert.equal(nextOpening(night, at("2026-12-04T21:30:10Z")), at("2026-12-04T21:30:10Z"));
    assert.equal(nextOpening(office, at("2026-12-01T22:00:00Z")), at("2026-12-02T14:00:00Z"));
  });

  it("refuses a time zone the operator does not know, naming the field", () => {
    assert.throws(() => {
      checkTimeZone("Mars/Olympus_Mons");
    }, /spec\.resync\.window\.timeZone "Mars\/Olympus_Mons" is not a time zone/);
    checkTimeZone("Europe/Berlin");
  });
});
