// The kube-site-recovery image built and run for real with podman (Debian's, with runc and
// explicit ulimits, from local base images: no registry is reachable here): `ksr version`, the
// non-root user, the replicators' native parts (the data path run inside the image, the fanotify
// helper with the agent's capability), and the operator's container leading against a `ksr local`
// API server.
import { strict as assert } from "node:assert";
import {
  chownSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { installCrds } from "../../src/api/install.js";
import { version } from "../../src/cli/version.js";
import { KubeClient, leases } from "../../src/runtime/index.js";
import { packageRoot } from "../../src/util/package-root.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import { freePort } from "../../src/local/ports.js";
import { runTool } from "../fixture/tools.js";

const image = "localhost/kube-site-recovery:e2e";
const podmanRun = ["--runtime", "runc", "run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

/** Why podman cannot run containers here, or undefined when it can. */
async function podmanUnavailable(): Promise<string | undefined> {
  const info = await runTool("podman", ["--runtime", "runc", "info", "--format", "{{.Host.OCIRuntime.Name}}"]).catch(
    (error: unknown) => ({ code: 127, stdout: "", stderr: error instanceof Error ? error.message : String(error) }),
  );
  return info.code === 0 ? undefined : `podman cannot run here: ${info.stderr.trim().split("\n").pop() ?? ""}`;
}

describe("kube-site-recovery image (e2e, podman)", function () {
  this.timeout(40 * 60_000); // a cold build makes the base images first
  const cluster = useCluster("image");

  before(async function () {
    const reason = await podmanUnavailable();
    if (reason !== undefined) {
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    const build = await runTool("bash", [join(packageRoot, "hack", "build-image.sh"), image]);
    assert.equal(build.code, 0, `hack/build-image.sh failed:\n${build.stderr.slice(-4000)}`);
  });

  it("runs `ksr version` and runs as the unprivileged ksr user", async () => {
    const run = await runTool("podman", [...podmanRun, "--rm", "--network", "none", image, "version"]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `ksr ${version}\n`);
    const inspect = await runTool("podman", [
      "image",
      "inspect",
      "--format",
      "{{.Config.User}} {{json .Config.Entrypoint}}",
      image,
    ]);
    assert.equal(inspect.stdout.trim(), '65532:65532 ["ksr"]');
  });

  it("runs the data path inside the image as the ksr user: `ksr replicate` carries a file, its xattr and a fifo", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ksr-image-data-"));
    try {
      mkdirSync(join(dir, "src"));
      writeFileSync(join(dir, "src", "order"), "42\n");
      // The native addon reads and writes extended attributes and makes special files.
      const made = await runTool("python3", [
        "-c",
        `import os; os.setxattr("${dir}/src/order", "user.shop", b"paid"); os.mkfifo("${dir}/src/queue")`,
      ]);
      assert.equal(made.code, 0, made.stderr);
      await runTool("chown", ["-R", "65532:65532", dir]);
      const run = await runTool("podman", [
        ...podmanRun,
        "--rm",
        "--network",
        "none",
        "--volume",
        `${dir}:/data`,
        image,
        "replicate",
        "--source",
        "/data/src",
        "--target",
        "/data/replica",
        "--work",
        "/data/work",
        "--once",
      ]);
      assert.equal(run.code, 0, `ksr replicate in the image failed:\n${run.stdout}${run.stderr}`);
      assert.match(run.stdout, /^replicated 2 entries, .* durable at the master target$/m);
      assert.equal(readFileSync(join(dir, "replica", "order"), "utf8"), "42\n");
      assert.ok(statSync(join(dir, "replica", "queue")).isFIFO(), "the fifo was not recreated");
      const xattr = await runTool("python3", [
        "-c",
        `import os; print(os.getxattr("${dir}/replica/order", "user.shop"))`,
      ]);
      assert.equal(xattr.stdout.trim(), "b'paid'");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("starts the fanotify helper with the agent pod's CAP_SYS_ADMIN, and it is refused without", async () => {
    // Its stdin closing ends it (the agent died), so a pipe stays open until it has answered.
    const helper = [
      "--entrypoint",
      "sh",
      image,
      "-c",
      "sleep 1 | /opt/kube-site-recovery/native/build/Release/ksr-fanotify-helper",
    ];
    const unprivileged = await runTool("podman", [...podmanRun, "--rm", "--network", "none", ...helper]);
    assert.match(unprivileged.stdout, /^e init 1$/m, "without CAP_SYS_ADMIN fanotify_init must fail with EPERM");
    const agent = await runTool("podman", [
      ...podmanRun,
      "--rm",
      "--network",
      "none",
      "--user",
      "0",
      "--cap-add",
      "SYS_ADMIN",
      ...helper,
    ]);
    assert.match(agent.stdout, /^ready$/m, `the helper did not start: ${agent.stdout}${agent.stderr}`);
  });

  it("runs the operator against the local cluster's API server: ready, leading, and a clean stop", async () => {
    await installCrds(cluster.kubeConfig);
    const dir = mkdtempSync(join(tmpdir(), "ksr-image-"));
    const kubeconfig = join(dir, "kubeconfig");
    copyFileSync(cluster.state.kubeconfig, kubeconfig);
    chownSync(kubeconfig, 65532, 65532); // readable by the image's user only
    const port = await freePort();
    const name = `ksr-operator-e2e-${process.pid}`;
    const client = new KubeClient(cluster.kubeConfig);
    try {
      const started = await runTool("podman", [
        ...podmanRun,
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--volume",
        `${kubeconfig}:/etc/ksr/kubeconfig:ro`,
        "--env",
        `POD_NAME=${name}`,
        image,
        "operator",
        "--kubeconfig",
        "/etc/ksr/kubeconfig",
        "--namespace",
        cluster.namespace,
        "--health-port",
        String(port),
      ]);
      assert.equal(started.code, 0, started.stderr);
      const logs = async () => (await runTool("podman", ["logs", "--tail", "20", name])).stderr;
      await eventually(
        "the operator's /readyz to answer 200",
        async () => {
          const answer = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
          return answer?.status === 200 ? true : undefined;
        },
        120_000,
        { describe: logs },
      );
      const holder = await eventually(
        "the operator's container to hold the Lease",
        async () => {
          const identity = (await client.get(leases, "ksr-operator", cluster.namespace))?.spec?.holderIdentity;
          return identity?.startsWith(name) === true ? identity : undefined;
        },
        60_000,
      );
      assert.match(holder, new RegExp(`^${name}_`));
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^# TYPE ksr_machine_rpo_seconds gauge$/m);
      const stop = await runTool("podman", ["stop", "--time", "30", name]);
      assert.equal(stop.code, 0, stop.stderr);
      const exit = await runTool("podman", ["inspect", "--format", "{{.State.ExitCode}}", name]);
      assert.equal(exit.stdout.trim(), "0", `the operator did not exit cleanly on SIGTERM:\n${await logs()}`);
    } finally {
      client.close();
      await runTool("podman", ["rm", "--force", "--ignore", name]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
