// The container runtime with real namespaces: a container sees its volumes at
// their paths and its own hostname, the host sees none of it, and killing its
// cgroup ends everything it started.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { logText } from "../../src/local/node/kubelet-server/container-log.js";
import { clusterCgroup, killCgroupTree } from "../../src/local/node/containment.js";
import { execInContainer, findHostTools, startContainer, type LaunchSpec } from "../../src/local/node/runtime.js";
import { isRunning } from "../../src/local/processes.js";

const mountTable = () =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ").slice(4, 5).join())
    .sort();

describe("local node container runtime", function () {
  this.timeout(30_000);
  const tools = findHostTools();
  let dir: string;
  const unique = `ksr-runtime-test-${process.pid}`;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ksr-runtime-"));
    mkdirSync(join(dir, "volume"));
    writeFileSync(join(dir, "volume", "greeting"), "hello\n");
    writeFileSync(join(dir, "disk.img"), Buffer.alloc(4096));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const spec = (script: string, cgroup?: string): LaunchSpec => ({
    rootDir: join(dir, "root"),
    scratchDir: join(dir, "scratch"),
    hostname: "pod-under-test",
    mounts: [
      { source: join(dir, "volume"), target: `/${unique}/data`, readOnly: false, type: "dir" },
      { source: join(dir, "volume"), target: `/var/lib/${unique}/ro`, readOnly: true, type: "dir" },
      { source: join(dir, "disk.img"), target: `/dev/${unique}`, readOnly: false, type: "file" },
    ],
    workingDir: `/${unique}/data`,
    argv: ["sh", "-c", script],
    env: { PATH: "/usr/bin:/bin", GREETING_FILE: "greeting" },
    logFile: join(dir, "logs", "0.log"),
    scriptFile: join(dir, "launch.sh"),
    ...(cgroup === undefined ? {} : { cgroup }),
  });

  it("shows volumes at their mount paths, in a private mount and UTS namespace", async () => {
    const before = mountTable();
    const script = [
      `echo "$(hostname) $(pwd) $(cat "$GREETING_FILE")"`,
      "echo written > out",
      `touch /var/lib/${unique}/ro/x 2>/dev/null || echo read-only`,
      `wc -c < /dev/${unique}`,
      `printf block | dd of=/dev/${unique} conv=notrunc 2>/dev/null`,
    ].join("; ");
    const container = startContainer(spec(script), tools);
    const exit = await container.exited;
    await container.logWritten;
    assert.equal(exit.exitCode, 0, logText(join(dir, "logs", "0.log")));
    assert.equal(logText(join(dir, "logs", "0.log")), `pod-under-test /${unique}/data hello\nread-only\n4096\n`);
    assert.equal(readFileSync(join(dir, "disk.img")).subarray(0, 5).toString(), "block");
    assert.equal(existsSync(`/dev/${unique}`), false, "device paths live in the container's own /dev");
    assert.equal(readFileSync(join(dir, "volume", "out"), "utf8"), "written\n");
    assert.equal(existsSync(`/${unique}`), false, "mount points are created inside the container only");
    assert.equal(existsSync(`/var/lib/${unique}`), false, "the overlay keeps /var/lib untouched");
    assert.deepEqual(mountTable(), before, "the host's mount table is unchanged");
  });

  it("runs exec probes inside the container's namespaces", async () => {
    const container = startContainer(spec("while true; do sleep 1; done"), tools);
    await container.setUp;
    try {
      const result = await execInContainer(
        container.record.pid,
        ["sh", "-c", "hostname; cat greeting"],
        {},
        5000,
        tools,
      );
      assert.deepEqual(result, { exitCode: 0, output: "pod-under-test\nhello\n" });
    } finally {
      process.kill(container.record.pid, "SIGKILL");
      await container.exited;
    }
  });

  it("ends a container's main process when the process that started it dies", async () => {
    const launcher = `
      const { startContainer, findHostTools } = await import(${JSON.stringify(new URL("../../src/local/node/runtime.js", import.meta.url).href)});
      const running = startContainer(JSON.parse(process.argv[1]), findHostTools());
      await running.setUp;
      process.stdout.write(String(running.record.pid) + "\\n");
      setInterval(() => undefined, 1000);`;
    const agent = spawn(
      process.execPath,
      ["--input-type=module", "-e", launcher, JSON.stringify(spec("while true; do sleep 1; done"))],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const pid = await new Promise<number>((resolve) =>
      agent.stdout.once("data", (chunk: Buffer) => {
        resolve(Number(chunk.toString().trim()));
      }),
    );
    const container = { name: "container", pid, startTicks: -1, logFile: "" };
    assert.equal(isRunning(container), true);
    agent.kill("SIGKILL");
    const deadline = Date.now() + 5000;
    while (isRunning(container) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const survived = isRunning(container);
    if (survived) process.kill(pid, "SIGKILL");
    assert.equal(survived, false);
  });

  it("kills a container's whole tree through its cgroup, daemons included", async function () {
    const parent = clusterCgroup(dir);
    if (parent === undefined) this.skip();
    const cgroup = join(parent, "c1");
    mkdirSync(cgroup);
    const container = startContainer(
      spec("setsid sleep 300 & echo $! > daemon.pid; while true; do sleep 1; done", cgroup),
      tools,
    );
    const pidFile = join(dir, "volume", "daemon.pid");
    while (!existsSync(pidFile) || readFileSync(pidFile, "utf8") === "") await new Promise((r) => setTimeout(r, 50));
    const daemon = { name: "daemon", pid: Number(readFileSync(pidFile, "utf8")), startTicks: -1, logFile: "" };
    assert.equal(isRunning(daemon), true);
    await killCgroupTree(parent);
    await container.exited;
    assert.equal(isRunning(daemon), false);
    assert.equal(existsSync(parent), false);
  });
});
