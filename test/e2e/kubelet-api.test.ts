// The nodes' kubelet API on `ksr local`, driven as a user drives it: the
// built kubectl's logs, exec and port-forward through the real apiserver,
// and direct requests that the kubelet must refuse.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { strict as assert } from "node:assert";
import { CoreV1Api, RbacAuthorizationV1Api, type V1Pod } from "@kubernetes/client-node";
import { encodeFrame, MessageReader, opcode } from "../../src/util/websocket-frames.js";
import { createCertificateAuthority, loadCertificateAuthority, type PemKeyPair } from "../../src/pki/certificates.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import {
  idle,
  podCondition,
  shellContainer,
  summarize,
  waitFor,
  waitForDefaultServiceAccount,
} from "./local-node-helpers.js";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("kubelet API on the local nodes (e2e)", function () {
  this.timeout(120_000);
  const cluster = useCluster("kubelet");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const ns = () => cluster.namespace;
  const kubectlPath = () => join(cluster.state.binDir, "kubectl");
  const env = () => ({ ...process.env, KUBECONFIG: cluster.state.kubeconfig });
  const started: ChildProcess[] = [];

  function kubectl(args: string[], input?: string): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(kubectlPath(), ["-n", ns(), ...args], { env: env(), stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      child.on("error", reject);
      child.on("close", (code) => {
        resolve({ code, stdout, stderr });
      });
      child.stdin.end(input);
    });
  }

  /** A long-running kubectl whose output is collected as it comes. */
  function kubectlBackground(args: string[]): {
    child: ChildProcess;
    output: () => string;
    exited: Promise<number | null>;
  } {
    const child = spawn(kubectlPath(), ["-n", ns(), ...args], { env: env(), stdio: ["ignore", "pipe", "pipe"] });
    started.push(child);
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    return { child, output: () => output, exited };
  }

  /** Runs a shell command on a terminal of `script`'s, which kubectl insists on for -t; input is typed into it. */
  function inTerminal(command: string, input = ""): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn("script", ["-qec", command, "/dev/null"], { env: env(), stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
      child.on("error", reject);
      child.on("close", (code) => {
        resolve({ code, stdout, stderr: "" });
      });
      child.stdin.end(input);
    });
  }

  afterEach(() => {
    for (const child of started.splice(0)) if (child.exitCode === null) child.kill();
  });

  async function runningPod(pod: V1Pod, namespace = ns()): Promise<V1Pod> {
    const name = pod.metadata?.name ?? "";
    await core().createNamespacedPod({ namespace, body: pod });
    return waitFor(
      `pod ${namespace}/${name} ready`,
      async () => {
        const current = await core().readNamespacedPod({ name, namespace });
        return podCondition(current, "Ready") === "True" ? current : undefined;
      },
      60_000,
      async () => summarize([await core().readNamespacedPod({ name, namespace })]),
    );
  }

  const pod = (name: string, script: string, extra: Partial<NonNullable<V1Pod["spec"]>> = {}): V1Pod => ({
    metadata: { name },
    spec: { terminationGracePeriodSeconds: 1, containers: [shellContainer("main", script)], ...extra },
  });

  /** A pod to attach to: its container reads stdin (and has a tty when asked), and it runs once. */
  const attachable = (name: string, script: string, extra: { stdinOnce?: boolean; tty?: boolean }): V1Pod =>
    pod(name, script, {
      restartPolicy: "Never",
      containers: [shellContainer("main", script, { stdin: true, ...extra })],
    });

  it("accepts and runs a Pod in default right after `ksr local up`", async () => {
    // No wait for the ServiceAccount: `up` returned only once the cluster accepts pods.
    const name = `first-${process.pid}`;
    try {
      const running = await runningPod(pod(name, `echo up; ${idle}`), "default");
      assert.equal(running.status?.phase, "Running");
    } finally {
      await core()
        .deleteNamespacedPod({ name, namespace: "default", gracePeriodSeconds: 0 })
        .catch(() => undefined);
    }
  });

  describe("with pods", () => {
    before(() => waitForDefaultServiceAccount(core(), ns()));

    it("kubectl logs: --tail, --timestamps, --since and -f following new lines until the container ends", async () => {
      await runningPod(
        pod("counter", "i=0; while [ ! -f /tmp/stop ]; do i=$((i+1)); echo line $i; sleep 0.2; done; echo done", {
          restartPolicy: "Never",
        }),
      );
      await waitFor("five lines", async () =>
        (await kubectl(["logs", "counter"])).stdout.split("\n").length > 5 ? true : undefined,
      );
      const tail = await kubectl(["logs", "counter", "--tail=2"]);
      assert.equal(tail.code, 0, tail.stderr);
      const tailLines = tail.stdout.trimEnd().split("\n");
      assert.equal(tailLines.length, 2);
      const [first, second] = tailLines.map((l) => Number(/^line (\d+)$/.exec(l)?.[1]));
      assert.equal(second, (first ?? 0) + 1);

      const stamped = await kubectl(["logs", "counter", "--timestamps", "--tail=3"]);
      for (const line of stamped.stdout.trimEnd().split("\n")) {
        const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z) line \d+$/.exec(line);
        assert.ok(match?.[1] !== undefined, `not a timestamped line: ${line}`);
        assert.ok(Math.abs(Date.parse(match[1]) - Date.now()) < 60_000);
      }

      await new Promise((resolve) => setTimeout(resolve, 2000));
      const all = (await kubectl(["logs", "counter"])).stdout.trimEnd().split("\n");
      const recent = (await kubectl(["logs", "counter", "--since=1s"])).stdout.trimEnd().split("\n");
      assert.ok(
        recent.length > 0 && recent.length < all.length - 2,
        `--since=1s gave ${recent.length} of ${all.length}`,
      );

      const follow = kubectlBackground(["logs", "-f", "counter", "--tail=1"]);
      const seenAtStart = await waitFor("the first followed line", () =>
        Promise.resolve(/line (\d+)/.exec(follow.output())?.[1]),
      );
      await waitFor("new lines through -f", () =>
        Promise.resolve(follow.output().includes(`line ${Number(seenAtStart) + 3}\n`) ? true : undefined),
      );
      const stop = await kubectl(["exec", "counter", "--", "touch", "/tmp/stop"]);
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal(await follow.exited, 0, follow.output());
      assert.match(follow.output(), /done\n$/);
    });

    it("kubectl logs --previous shows the run before a restart", async () => {
      await runningPod({
        metadata: { name: "restarter" },
        spec: {
          terminationGracePeriodSeconds: 1,
          volumes: [{ name: "state", emptyDir: {} }],
          containers: [
            shellContainer(
              "main",
              `if [ ! -f /state/ran ]; then touch /state/ran; echo first run; exit 1; fi; echo second run; ${idle}`,
              { volumeMounts: [{ name: "state", mountPath: "/state" }] },
            ),
          ],
        },
      });
      // The pod is Running during the first run too, and again before the second run has printed anything.
      const current = await eventually(
        "the second run's output",
        async () => {
          const restarts = await kubectl([
            "get",
            "pod",
            "restarter",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
          ]);
          if (Number(restarts.stdout) < 1) return undefined;
          const logs = await kubectl(["logs", "restarter"]);
          return logs.stdout === "" ? undefined : logs;
        },
        30_000,
      );
      const previous = await kubectl(["logs", "restarter", "--previous"]);
      assert.deepEqual(
        [current.stdout, previous.stdout],
        ["second run\n", "first run\n"],
        current.stderr + previous.stderr,
      );
    });

    it("kubectl exec passes stdin and returns the command's exit code and stderr", async () => {
      await runningPod(pod("shell", idle));
      const withInput = await kubectl(
        ["exec", "-i", "shell", "--", "sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        "hello\nworld\n",
      );
      assert.deepEqual(
        { code: withInput.code, stdout: withInput.stdout, stderr: withInput.stderr.includes("to-stderr") },
        { code: 3, stdout: "hello\nworld\n", stderr: true },
      );
      const inside = await kubectl(["exec", "shell", "--", "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME"]);
      assert.deepEqual([inside.code, inside.stdout], [0, "shell\nshell\nshell\n"], inside.stderr);
      const missing = await kubectl(["exec", "shell", "--", "/no/such/command"]);
      assert.notEqual(missing.code, 0);
    });

    it("kubectl attach -i feeds the container's stdin, and ends when the container does", async () => {
      // As on any cluster, a container not yet running cannot be attached to.
      await runningPod(
        attachable("attacher", 'read line; echo "got $line"; cat; echo eof; exit 3', { stdinOnce: true }),
      );
      const attached = await kubectl(["attach", "-i", "attacher"], "hello\nmore\n");
      assert.equal(attached.code, 0, attached.stderr);
      assert.match(attached.stdout, /got hello\nmore\neof\n/);
      const ended = await waitFor("attacher terminated", async () => {
        const current = await core().readNamespacedPod({ name: "attacher", namespace: ns() });
        return current.status?.containerStatuses?.[0]?.state?.terminated;
      });
      assert.equal(ended.exitCode, 3, "stdinOnce: the container read end-of-file once kubectl's input ended");
    });

    it("kubectl attach -it reaches the container's terminal, sized as the client's", async () => {
      await runningPod(attachable("tty-attach", 'read line; tty; stty size; echo "read $line"', { tty: true }));
      // What is typed waits in the terminal until kubectl reads it.
      const result = await inTerminal(
        `stty cols 77 rows 22; ${kubectlPath()} -n ${ns()} attach -it tty-attach`,
        "size\r",
      );
      assert.match(result.stdout, /\/dev\/pts\/\d+\r\n22 77\r\nread size\r\n/, result.stdout);
    });

    it("a WebSocket exec the apiserver passes through (v4.channel.k8s.io, no v5) reaches the node", async () => {
      await runningPod(pod("websocket", idle));
      const pki = (file: string) => readFileSync(join(cluster.state.dir, "pki", file), "utf8");
      const command = ["sh", "-c", "read line; echo got $line; echo oops >&2; exit 3"];
      const query = [
        ...command.map((c) => `command=${encodeURIComponent(c)}`),
        "stdin=true",
        "stdout=true",
        "stderr=true",
      ];
      const server = new URL(cluster.state.server);
      const messages = await new Promise<Buffer[]>((resolve, reject) => {
        const req = request({
          host: server.hostname,
          port: server.port,
          path: `/api/v1/namespaces/${ns()}/pods/websocket/exec?${query.join("&")}`,
          ca: pki("ca.crt"),
          cert: pki("admin.crt"),
          key: pki("admin.key"),
          headers: {
            Connection: "Upgrade",
            Upgrade: "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
            "Sec-WebSocket-Protocol": "v4.channel.k8s.io",
          },
        });
        req.on("response", (res) => {
          reject(new Error(`no upgrade: HTTP ${res.statusCode}`));
        });
        req.on("error", reject);
        req.on("upgrade", (res, socket) => {
          assert.equal(res.headers["sec-websocket-protocol"], "v4.channel.k8s.io");
          const received: Buffer[] = [];
          const reader = new MessageReader("server");
          socket.on("data", (chunk: Buffer) => {
            for (const event of reader.push(chunk))
              if (event.kind === "message" && event.binary) received.push(event.data);
          });
          socket.on("close", () => {
            resolve(received);
          });
          socket.write(encodeFrame(opcode.binary, Buffer.from("\u0000hi\n"), { mask: randomBytes(4) }));
        });
        req.end();
      });
      const on = (channel: number) =>
        Buffer.concat(messages.filter((m) => m[0] === channel).map((m) => m.subarray(1))).toString();
      assert.equal(on(1), "got hi\n");
      assert.equal(on(2), "oops\n");
      const status = JSON.parse(on(3)) as { reason?: string; details?: { causes?: { message?: string }[] } };
      assert.deepEqual([status.reason, status.details?.causes?.[0]?.message], ["NonZeroExitCode", "3"]);
    });

    it("kubectl exec -t gives the command a terminal of the client's size", async () => {
      await runningPod(pod("terminal", idle));
      const result = await inTerminal(
        `stty cols 123 rows 45; ${kubectlPath()} -n ${ns()} exec -it terminal -- sh -c 'tty; stty size; exit 4'`,
      );
      assert.match(result.stdout, /\/dev\/pts\/\d+\r\n45 123\r\n/);
      assert.equal(result.code, 4, result.stdout);
    });

    it("kubectl port-forward reaches a server listening on the pod's localhost", async () => {
      const serve =
        "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && cd /tmp/www && exec python3 -m http.server --bind 127.0.0.1 8080";
      await runningPod({
        metadata: { name: "web" },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [{ name: "main", image: "busybox:1.36", command: ["sh", "-c", serve] }],
        },
      });
      const forward = kubectlBackground(["port-forward", "pod/web", ":8080"]);
      const port = await waitFor("port-forward listening", () =>
        Promise.resolve(/Forwarding from 127\.0\.0\.1:(\d+) -> 8080/.exec(forward.output())?.[1]),
      );
      const get = (path: string) =>
        new Promise<string>((resolve, reject) => {
          fetch(`http://127.0.0.1:${port}${path}`)
            .then((res) => res.text())
            .then(resolve, reject);
        });
      // The server binds only the pod's loopback: nothing but a forward into its namespace reaches it.
      assert.equal(
        await waitFor("the page through the forward", () => get("/index.html").catch(() => undefined)),
        "hello-from-web\n",
      );
      assert.equal(await get("/index.html"), "hello-from-web\n");
    });

    describe("direct clients", () => {
      let target: { port: number; path: string; ca: string };
      const pki = (file: string) => readFileSync(join(cluster.state.dir, "pki", file), "utf8");
      const issue = async (user: string) =>
        loadCertificateAuthority({ cert: pki("ca.crt"), key: pki("ca.key") }).issue({
          commonName: user,
          usage: "client",
        });

      const get = (client: PemKeyPair | undefined) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request(
            { host: "127.0.0.1", port: target.port, path: target.path, ca: target.ca, ...(client ?? {}) },
            (res) => {
              let body = "";
              res.on("data", (c: Buffer) => (body += c.toString()));
              res.on("end", () => {
                resolve({ status: res.statusCode ?? 0, body });
              });
            },
          );
          req.on("error", reject);
          req.end();
        });

      before(async () => {
        const running = await runningPod(pod("direct", `echo direct-log; ${idle}`));
        const node = await core().readNode({ name: running.spec?.nodeName ?? "" });
        target = {
          port: node.status?.daemonEndpoints?.kubeletEndpoint?.Port ?? 0,
          path: `/containerLogs/${ns()}/direct/main`,
          ca: pki("ca.crt"),
        };
      });

      it("refuses a client without a certificate, or with one of another CA (401)", async () => {
        assert.equal((await get(undefined)).status, 401);
        const stranger = await (
          await createCertificateAuthority("stranger")
        ).issue({ commonName: "kube-apiserver-kubelet-client", organizations: ["system:masters"], usage: "client" });
        assert.equal((await get(stranger)).status, 401);
      });

      it("asks the apiserver (SubjectAccessReview): 403 without nodes/proxy, 200 once RBAC grants it", async () => {
        const user = `ksr-e2e-${process.pid}-reader`;
        const client = await issue(user);
        const refused = await get(client);
        assert.deepEqual(refused, {
          status: 403,
          body: `Forbidden (user=${user}, verb=get, resource=nodes, subresource(s)=[proxy])\n`,
        });
        // A refusal is remembered for 30 s, as the kubelet's authorizer cache does: the grant goes to a fresh user.
        const granted = `${user}-granted`;
        const grantedClient = await issue(granted);
        const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
        await rbac.createClusterRole({
          body: {
            metadata: { name: granted },
            rules: [{ apiGroups: [""], resources: ["nodes/proxy"], verbs: ["get"] }],
          },
        });
        try {
          await rbac.createClusterRoleBinding({
            body: {
              metadata: { name: granted },
              roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: granted },
              subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: granted }],
            },
          });
          const allowed = await waitFor("the granted read", async () => {
            const response = await get(grantedClient);
            return response.status === 200 ? response : undefined;
          });
          assert.equal(allowed.body, "direct-log\n");
          assert.equal((await get(client)).status, 403);
        } finally {
          await rbac.deleteClusterRoleBinding({ name: granted }).catch(() => undefined);
          await rbac.deleteClusterRole({ name: granted }).catch(() => undefined);
        }
      });
    });
  });
});
