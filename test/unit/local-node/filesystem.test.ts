import { strict as assert } from "node:assert";
import {
  normalizeContainerPath,
  planFilesystem,
  type BindMount,
  type HostView,
} from "../../../src/local/node/filesystem.js";

/** A host with /var/lib and /etc, and /var/run → /run. */
const existing = new Set([
  "/",
  "/var",
  "/var/lib",
  "/var/lib/postgresql",
  "/etc",
  "/etc/hosts",
  "/run",
  "/var/run",
  "/tmp",
]);
const host: HostView = {
  topLevel: [
    { name: "var", type: "dir" },
    { name: "etc", type: "dir" },
    { name: "run", type: "dir" },
    { name: "tmp", type: "dir" },
    { name: "bin", type: "symlink", linkTarget: "usr/bin" },
  ],
  exists: (path) => existing.has(path),
  realpath: (path) => (path.startsWith("/var/run") ? path.replace("/var/run", "/run") : path),
};
const dir = (source: string, target: string, readOnly = false): BindMount => ({
  source,
  target,
  readOnly,
  type: "dir",
});

describe("local node container filesystem plan", () => {
  it("binds over an existing directory without creating or overlaying anything", () => {
    const plan = planFilesystem([dir("/vol/a", "/var/lib/postgresql")], "/", host);
    assert.deepEqual(plan.overlays, []);
    assert.deepEqual(plan.steps, [{ bind: dir("/vol/a", "/var/lib/postgresql") }]);
  });

  it("creates a missing top-level mount point in the root tmpfs, never on the host", () => {
    const plan = planFilesystem([dir("/vol/a", "/data")], "/", host);
    assert.deepEqual(plan.overlays, []);
    assert.deepEqual(plan.steps, [{ mkdir: "/data" }, { bind: dir("/vol/a", "/data") }]);
  });

  it("overlays the deepest existing host directory to create a nested mount point", () => {
    const plan = planFilesystem([dir("/vol/a", "/var/lib/ksr/journal")], "/", host);
    assert.deepEqual(plan.overlays, ["/var/lib"]);
    assert.deepEqual(plan.steps, [{ mkdir: "/var/lib/ksr/journal" }, { bind: dir("/vol/a", "/var/lib/ksr/journal") }]);
  });

  it("keeps one overlay for nested needs and creates paths inside earlier volumes there", () => {
    const plan = planFilesystem(
      [
        dir("/v/2", "/var/lib/x/y"),
        dir("/v/1", "/var/lib/x"),
        dir("/v/3", "/var/lib/z/w"),
        dir("/v/4", "/data/sub"),
        dir("/v/5", "/data"),
      ],
      "/",
      host,
    );
    assert.deepEqual(plan.overlays, ["/var/lib"]);
    assert.deepEqual(plan.steps, [
      { mkdir: "/data" },
      { bind: dir("/v/5", "/data") },
      { mkdir: "/data/sub" },
      { bind: dir("/v/4", "/data/sub") },
      { mkdir: "/var/lib/x" },
      { bind: dir("/v/1", "/var/lib/x") },
      { mkdir: "/var/lib/x/y" },
      { bind: dir("/v/2", "/var/lib/x/y") },
      { mkdir: "/var/lib/z/w" },
      { bind: dir("/v/3", "/var/lib/z/w") },
    ]);
  });

  it("follows host symlinks into the pod's own /run", () => {
    const plan = planFilesystem(
      [dir("/pod/run", "/run"), dir("/pod/token", "/var/run/secrets/kubernetes.io/serviceaccount", true)],
      "/",
      host,
    );
    assert.deepEqual(plan.overlays, []);
    assert.deepEqual(plan.steps.at(-1), { bind: dir("/pod/token", "/run/secrets/kubernetes.io/serviceaccount", true) });
    assert.deepEqual(plan.steps.at(-2), { mkdir: "/run/secrets/kubernetes.io/serviceaccount" });
  });

  it("creates device paths in the container's own /dev", () => {
    const device: BindMount = { source: "/vol/disk.img", target: "/dev/xvdb", readOnly: false, type: "file" };
    const plan = planFilesystem([device], "/", host);
    assert.deepEqual(plan.overlays, []);
    assert.deepEqual(plan.steps, [{ touch: "/dev/xvdb" }, { bind: device }]);
  });

  it("creates a missing working directory like a mount point", () => {
    assert.equal(planFilesystem([], "/app", host).workingDir, "/app");
    assert.deepEqual(planFilesystem([], "/app", host).steps, [{ mkdir: "/app" }]);
    assert.deepEqual(planFilesystem([], "/var/lib/app", host).overlays, ["/var/lib"]);
  });

  const paths: [string, string | RegExp][] = [
    ["/data/", "/data"],
    ["//data//x", "/data/x"],
    ["/", "/"],
    ["data", /must be an absolute path/],
    ["/data/../etc", /must not contain "\.\."/],
  ];
  for (const [input, expected] of paths) {
    it(`normalizes ${input}`, () => {
      if (typeof expected === "string") assert.equal(normalizeContainerPath(input, "mountPath"), expected);
      else assert.throws(() => normalizeContainerPath(input, "mountPath"), expected);
    });
  }
});
