// Notifications end to end below the operator: Events recorded on the real API server by the
// operator's EventRecorder reach a real HTTP server (Slack-compatible JSON) and a real SMTP server
// (aiosmtpd, STARTTLS with a private CA and AUTH), with every credential read from Secrets and
// none of them in the logs.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { checkOperatorConfig, type NotificationsConfig } from "../../src/notifications/config.js";
import { Notifier } from "../../src/notifications/notifier.js";
import { createCertificateAuthority } from "../../src/pki/certificates.js";
import {
  eventsV1,
  EventRecorder,
  KubeClient,
  secrets,
  type EventRecord,
  type KubeObject,
} from "../../src/runtime/index.js";
import { packageRoot } from "../../src/util/package-root.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";

interface Received {
  path: string;
  body: { text: string; attachments: { color: string; fields: { title: string; value: string }[] }[] };
}

/** An HTTP sink that answers the first `failFirst` requests with 500. */
async function httpSink(failFirst: number): Promise<{ server: Server; url: string; received: Received[] }> {
  const received: Received[] = [];
  let requests = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      requests++;
      if (requests <= failFirst) {
        res.writeHead(500).end("try again");
        return;
      }
      received.push({
        path: req.url ?? "",
        body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Received["body"],
      });
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

async function smtpSink(dir: string, cert: string, key: string, user: string, password: string) {
  await writeFile(join(dir, "cert.pem"), cert);
  await writeFile(join(dir, "key.pem"), key, { mode: 0o600 });
  const mail = join(dir, "mail");
  await mkdir(mail);
  const child = spawn(
    "/usr/bin/python3",
    [join(packageRoot, "test/fixture/smtp-sink.py"), mail, join(dir, "cert.pem"), join(dir, "key.pem"), user, password],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /listening (\d+)/.exec(out);
      if (match !== null) resolve(Number(match[1]));
    });
    child.once("exit", (code) => {
      reject(new Error(`smtp-sink.py exited ${code}: ${stderr}`));
    });
  });
  const messages = async () =>
    Promise.all(
      (await readdir(mail))
        .filter((name) => name.endsWith(".eml"))
        .sort()
        .map((name) => readFile(join(mail, name), "utf8")),
    );
  return { child, port, messages };
}

function captureLog() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      done();
    },
  });
  return { log: pino({ level: "debug" }, stream), lines };
}

describe("notifications: Events to a webhook and to email over SMTP", function () {
  this.timeout(120_000);
  const cluster = useCluster("notify");
  const tmp: string[] = [];
  let client: KubeClient;
  let smtp: Awaited<ReturnType<typeof smtpSink>>;
  let smtpChild: ChildProcess | undefined;
  let caCert = "";
  const webhookToken = `T0${randomBytes(12).toString("hex")}`;
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const sinks: Server[] = [];

  before(async () => {
    client = new KubeClient(cluster.kubeConfig);
    const dir = await mkdtemp(join(tmpdir(), "ksr-notify-"));
    tmp.push(dir);
    const ca = await createCertificateAuthority("notifications test CA");
    caCert = ca.cert;
    const server = await ca.issue({ commonName: "127.0.0.1", ipAddresses: ["127.0.0.1"], usage: "server" });
    smtp = await smtpSink(dir, server.cert, server.key, "ksr-alerts", password);
    smtpChild = smtp.child;
    const secret = (name: string, data: Record<string, string>) =>
      client.create(secrets, { metadata: { name, namespace: cluster.namespace }, stringData: data });
    await secret("smtp-login", { username: "ksr-alerts", password });
    await secret("smtp-wrong", { username: "ksr-alerts", password: `${password}-wrong` });
    await secret("smtp-ca", { "ca.crt": caCert });
  });

  after(async () => {
    smtpChild?.kill("SIGTERM");
    for (const server of sinks) server.close();
    client.close();
    for (const dir of tmp) await rm(dir, { recursive: true, force: true });
  });

  const webhookSecret = async (name: string, url: string) => {
    await client.create(secrets, { metadata: { name, namespace: cluster.namespace }, stringData: { url } });
  };

  const emailReceiver = (name: string, credentials: string, categories?: string[]) => ({
    name,
    ...(categories === undefined ? {} : { categories }),
    email: {
      smtp: {
        host: "127.0.0.1",
        port: smtp.port,
        security: "starttls",
        caSecretRef: { name: "smtp-ca", key: "ca.crt" },
        credentialsSecretRef: { name: credentials },
      },
      from: "dr@example.com",
      to: ["oncall@example.com", "storage@example.com"],
    },
  });

  function world(config: NotificationsConfig, attempts = 3) {
    const { log, lines } = captureLog();
    const notifier = new Notifier({ client, namespace: cluster.namespace, config, log, attempts, retryDelayMs: 100 });
    const recorder = new EventRecorder(client, {
      reportingController: "ksr-operator",
      reportingInstance: "test",
      logger: log,
    });
    recorder.addListener(notifier.onEvent);
    return { notifier, recorder, lines };
  }

  const machine = (name: string): KubeObject => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: cluster.namespace, uid: randomUUID() },
  });
  const healthChanged: EventRecord = {
    type: "Warning",
    reason: "HealthChanged",
    action: "Protect",
    note: "health Healthy → Critical: RPO 11m is over twice the rpoThreshold 5m",
  };

  it("a machine's health change is an Event, a Slack-compatible POST and a mail sent with STARTTLS and AUTH", async () => {
    const hook = await httpSink(0);
    sinks.push(hook.server);
    await webhookSecret("hook-url", `${hook.url}/services/${webhookToken}`);
    const config = checkOperatorConfig(
      {
        notifications: {
          receivers: [
            { name: "chat", webhook: { urlSecretRef: { name: "hook-url", key: "url" } } },
            emailReceiver("oncall", "smtp-login"),
          ],
        },
      },
      "test",
    ).notifications;
    const { notifier, recorder, lines } = world(config);
    const db = machine("db");
    await recorder.record(db, healthChanged);
    await notifier.flush();

    const { items: events } = await client.list(eventsV1, { namespace: cluster.namespace });
    assert.ok(
      events.some((event) => event.reason === "HealthChanged" && event.regarding.name === "db"),
      "the Event itself is recorded",
    );
    assert.equal(hook.received.length, 1);
    const [post] = hook.received;
    assert.ok(post !== undefined);
    const [attachment] = post.body.attachments;
    assert.ok(attachment !== undefined);
    assert.equal(post.path, `/services/${webhookToken}`);
    assert.match(
      post.body.text,
      /\[Warning\] ProtectedMachine notify-\d+-\d+\/db: HealthChanged: health Healthy → Critical/,
    );
    assert.equal(attachment.color, "danger");
    assert.deepEqual(attachment.fields.find((field) => field.title === "Category")?.value, "MachineHealth");

    const mails = await eventually("the mail at the SMTP sink", async () => {
      const found = await smtp.messages();
      return found.length === 1 ? found : undefined;
    });
    // Unfold headers and undo quoted-printable, as a mail client shows the message.
    const mail = (mails[0] ?? "")
      .replace(/\r\n[ \t]+/g, " ")
      .replace(/=\r\n/g, "")
      .replace(/(?:=[0-9A-F]{2})+/g, (encoded) => Buffer.from(encoded.replaceAll("=", ""), "hex").toString("utf8"));
    assert.match(mail, /^X-Envelope-From: dr@example\.com$/m);
    assert.match(mail, /^X-Envelope-To: oncall@example\.com,storage@example\.com$/m);
    assert.match(mail, /^X-Authenticated: True$/m);
    assert.match(mail, /^Subject: \[kube-site-recovery\] \[Warning\] ProtectedMachine .*\/db: HealthChanged$/m);
    assert.match(mail, /health Healthy → Critical: RPO 11m is over twice the rpoThreshold 5m/);
    assert.match(mail, /kubectl -n notify-\d+-\d+ describe protectedmachine db/);

    const logged = lines.join("\n");
    assert.match(logged, /"receiver":"chat".*"notification sent"/);
    assert.match(logged, /"receiver":"oncall".*"notification sent"/);
    for (const secret of [password, webhookToken]) assert.ok(!logged.includes(secret), `the log shows ${secret}`);
  });

  it("each receiver hears only its categories, and a repeated Event is not sent again", async () => {
    const hook = await httpSink(0);
    sinks.push(hook.server);
    const config = checkOperatorConfig(
      {
        notifications: {
          receivers: [
            { name: "runs", categories: ["RunResult"], webhook: { url: `${hook.url}/runs` } },
            { name: "rpo", categories: ["RpoThreshold"], webhook: { url: `${hook.url}/rpo` } },
          ],
        },
      },
      "test",
    ).notifications;
    const { notifier, recorder } = world(config);
    const run: KubeObject = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "FailoverRun",
      metadata: { name: "drill-1", namespace: cluster.namespace, uid: randomUUID() },
    };
    const rpo: EventRecord = {
      type: "Warning",
      reason: "RpoThresholdExceeded",
      action: "Replicate",
      note: "RPO 6m is above the policy's rpoThreshold 5m (health Warning)",
    };
    const db = machine("db2");
    await recorder.record(db, healthChanged); // MachineHealth: nobody asked
    await recorder.record(db, rpo);
    await recorder.record(db, rpo); // the same Event again: a series count, not a new notification
    await recorder.record(db, { type: "Normal", reason: "Protected", action: "Protect", note: "protected" });
    await recorder.record(run, { type: "Normal", reason: "StepSucceeded", action: "FailoverRun", note: "step" });
    await recorder.record(run, {
      type: "Normal",
      reason: "RunSucceeded",
      action: "FailoverRun",
      note: "Test run succeeded (RTO 42s); end the drill with kubectl dr cleanup drill-1",
    });
    await notifier.flush();
    assert.deepEqual(
      hook.received.map((r) => [r.path, r.body.text.replace(/ notify-\d+-\d+\//, " NS/")]),
      [
        [
          "/rpo",
          "[Warning] ProtectedMachine NS/db2: RpoThresholdExceeded: RPO 6m is above the policy's rpoThreshold 5m (health Warning)",
        ],
        [
          "/runs",
          "[Normal] FailoverRun NS/drill-1: RunSucceeded: Test run succeeded (RTO 42s); end the drill with kubectl dr cleanup drill-1",
        ],
      ],
    );
  });

  it("retries a webhook answering 500; a refused SMTP login fails after its attempts without logging any secret", async () => {
    const hook = await httpSink(2);
    sinks.push(hook.server);
    await webhookSecret("hook-flaky", `${hook.url}/services/${webhookToken}/flaky`);
    const before = (await smtp.messages()).length;
    const config = checkOperatorConfig(
      {
        notifications: {
          receivers: [
            { name: "flaky", webhook: { urlSecretRef: { name: "hook-flaky", key: "url" } } },
            emailReceiver("refused", "smtp-wrong"),
            { name: "missing", webhook: { urlSecretRef: { name: "no-such-secret", key: "url" } } },
          ],
        },
      },
      "test",
    ).notifications;
    const { notifier, recorder, lines } = world(config, 3);
    await recorder.record(machine("db3"), healthChanged);
    await notifier.flush();

    assert.equal(hook.received.length, 1, "the third attempt reached the webhook");
    assert.equal((await smtp.messages()).length, before, "no mail accepted with the wrong password");
    const logged = lines.join("\n");
    assert.match(logged, /"receiver":"flaky".*"attempt":2.*webhook answered HTTP 500.*retrying/);
    assert.match(logged, /"receiver":"flaky".*"attempt":3.*"notification sent"/);
    assert.match(
      logged,
      /"receiver":"refused".*"attempt":3.*535 5\.7\.8 Authentication credentials invalid.*"could not send notification"/,
    );
    assert.match(logged, /"receiver":"missing".*Secret notify-\d+-\d+\/no-such-secret does not exist/);
    for (const secret of [password, `${password}-wrong`, webhookToken])
      assert.ok(!logged.includes(secret), `the log shows ${secret}`);
  });
});
