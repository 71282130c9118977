import { strict as assert } from "node:assert";
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeEntry, entriesOf, nowNs } from "../../../src/local/node/kubelet-server/container-log.js";
import { findCgroup2Mount } from "../../../src/local/node/containment.js";
import { nodeLayout } from "../../../src/local/node/layout.js";
import { containerLogFile, readContainerLog } from "../../../src/local/node/logs.js";

describe("local node logs", () => {
  let dir: string;
  const write = (podDir: string, container: string, run: number, text: string) => {
    const path = join(nodeLayout(dir).logs, podDir, container);
    mkdirSync(path, { recursive: true });
    writeFileSync(
      join(path, `${run}.log`),
      Buffer.concat(entriesOf(Buffer.from(text), "stdout", nowNs()).map(encodeEntry)),
    );
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ksr-logs-"));
    write("shop_db-0_old", "db", 0, "old pod\n");
    utimesSync(join(nodeLayout(dir).logs, "shop_db-0_old"), new Date(2000, 1, 1), new Date(2000, 1, 1));
    write("shop_db-0_new", "db", 0, "first run\n");
    write("shop_db-0_new", "db", 1, "second run\n");
    write("shop_web_u", "web", 0, "web\n");
    write("shop_web_u", "sidecar", 0, "sidecar\n");
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints the newest pod's current run, or its previous run", () => {
    assert.equal(readContainerLog({ dir, namespace: "shop", pod: "db-0" }), "second run\n");
    assert.equal(readContainerLog({ dir, namespace: "shop", pod: "db-0", previous: true }), "first run\n");
  });

  const errors: [string, Parameters<typeof containerLogFile>[0], RegExp][] = [
    ["an unknown pod", { dir: "", namespace: "shop", pod: "nope" }, /no logs for pod shop\/nope/],
    [
      "several containers without -c",
      { dir: "", namespace: "shop", pod: "web" },
      /several containers \(.*\); choose one with -c/,
    ],
    ["an unknown container", { dir: "", namespace: "shop", pod: "web", container: "x" }, /no logs for container "x"/],
    [
      "no previous run",
      { dir: "", namespace: "shop", pod: "web", container: "web", previous: true },
      /has no previous run/,
    ],
  ];
  for (const [what, request, message] of errors) {
    it(`explains ${what}`, () => {
      assert.throws(() => containerLogFile({ ...request, dir }), message);
    });
  }

  it("finds the cgroup2 mount in mountinfo, or none", () => {
    const line = (mount: string, type: string) => `41 31 0:38 / ${mount} rw,relatime - ${type} ${type} rw`;
    assert.equal(
      findCgroup2Mount([line("/sys/fs/cgroup/cpu", "cgroup"), line("/sys/fs/cgroup/unified", "cgroup2")].join("\n")),
      "/sys/fs/cgroup/unified",
    );
    assert.equal(findCgroup2Mount(line("/sys/fs/cgroup/cpu", "cgroup")), undefined);
  });
});
