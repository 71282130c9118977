// The operator's configuration: what is accepted, what defaults it gets, and that every refusal
// names the path of the bad value and what to write instead.
import { strict as assert } from "node:assert";
import { checkOperatorConfig, OperatorConfigError, parseOperatorConfig } from "../../src/notifications/config.js";
import { notificationCategory } from "../../src/notifications/notifier.js";
import { emailText, slackBody, type Notification } from "../../src/notifications/channels.js";

const webhook = (url: string) => ({ notifications: { receivers: [{ name: "chat", webhook: { url } }] } });
const email = (fields: Record<string, unknown>, smtp: Record<string, unknown> = {}) => ({
  notifications: {
    receivers: [
      {
        name: "mail",
        email: {
          smtp: { host: "smtp.example.com", ...smtp },
          from: "dr@example.com",
          to: ["a@example.com"],
          ...fields,
        },
      },
    ],
  },
});

describe("notifications: operator configuration", () => {
  it("an empty file, or one without notifications, configures no receiver", () => {
    assert.deepEqual(parseOperatorConfig("", "f").notifications.receivers, []);
    assert.deepEqual(parseOperatorConfig("notifications: {}\n", "f").notifications.receivers, []);
  });

  it("fills in defaults: every category, STARTTLS on 587, 465 for TLS, username/password keys", () => {
    const config = parseOperatorConfig(
      [
        "notifications:",
        "  receivers:",
        "    - name: ops",
        "      email:",
        "        smtp: {host: smtp.example.com, credentialsSecretRef: {name: smtp}}",
        "        from: dr@example.com",
        "        to: [oncall@example.com]",
        "    - name: tls",
        "      categories: [RunResult]",
        "      email: {smtp: {host: 10.0.0.5, security: tls}, from: dr@example.com, to: [x@example.com]}",
      ].join("\n"),
      "f",
    );
    const [ops, tls] = config.notifications.receivers;
    assert.deepEqual(ops?.categories, ["MachineHealth", "RpoThreshold", "RunResult"]);
    assert.deepEqual(ops.email?.smtp, {
      host: "smtp.example.com",
      port: 587,
      security: "starttls",
      credentialsSecretRef: { name: "smtp", usernameKey: "username", passwordKey: "password" },
    });
    assert.deepEqual(tls?.categories, ["RunResult"]);
    assert.equal(tls.email?.smtp.port, 465);
  });

  const good: { name: string; value: unknown }[] = [
    { name: "an https webhook", value: webhook("https://hooks.example.com/services/T0/B0") },
    { name: "an http webhook inside the cluster", value: webhook("http://alertmanager.monitoring.svc:9093/hook") },
    {
      name: "a webhook URL from a Secret",
      value: {
        notifications: { receivers: [{ name: "slack", webhook: { urlSecretRef: { name: "slack", key: "url" } } }] },
      },
    },
    { name: "plain SMTP without credentials", value: email({}, { security: "none", port: 25 }) },
  ];
  for (const { name, value } of good)
    it(`accepts ${name}`, () => {
      assert.equal(checkOperatorConfig(value, "f").notifications.receivers.length, 1);
    });

  const bad: { name: string; value: unknown; problem: RegExp }[] = [
    { name: "a top-level typo", value: { notification: {} }, problem: /config\.notification is not a known field/ },
    {
      name: "receivers not a list",
      value: { notifications: { receivers: "x" } },
      problem: /notifications\.receivers must be a list/,
    },
    { name: "an ftp webhook", value: webhook("ftp://x/y"), problem: /receivers\[0\]\.webhook\.url has scheme ftp/ },
    { name: "not a URL", value: webhook("hooks.example.com"), problem: /webhook\.url is not a URL/ },
    {
      name: "credentials in the URL",
      value: webhook("https://user:pw@hooks.example.com/x"),
      problem: /carries credentials in the URL; put the whole URL in a Secret and use urlSecretRef/,
    },
    {
      name: "both url and urlSecretRef",
      value: {
        notifications: {
          receivers: [{ name: "a", webhook: { url: "https://x", urlSecretRef: { name: "s", key: "k" } } }],
        },
      },
      problem: /webhook needs exactly one of url and urlSecretRef/,
    },
    {
      name: "neither webhook nor email",
      value: { notifications: { receivers: [{ name: "a" }] } },
      problem: /receivers\[0\] needs exactly one of webhook and email/,
    },
    {
      name: "a bad receiver name",
      value: { notifications: { receivers: [{ name: "Ops Team", webhook: { url: "https://x" } }] } },
      problem: /receivers\[0\]\.name must be a DNS label/,
    },
    {
      name: "a repeated receiver name",
      value: {
        notifications: {
          receivers: [
            { name: "a", webhook: { url: "https://x" } },
            { name: "a", webhook: { url: "https://y" } },
          ],
        },
      },
      problem: /receivers\[1\]\.name repeats receiver a/,
    },
    {
      name: "an unknown category",
      value: {
        notifications: { receivers: [{ name: "a", categories: ["Everything"], webhook: { url: "https://x" } }] },
      },
      problem: /categories\[0\] must be one of MachineHealth, RpoThreshold, RunResult, got "Everything"/,
    },
    {
      name: "a bad from address",
      value: email({ from: "dr at example" }),
      problem: /email\.from is not an email address/,
    },
    {
      name: "an empty to list",
      value: email({ to: [] }),
      problem: /email\.to must be a list of one or more addresses/,
    },
    {
      name: "a bad to address",
      value: email({ to: ["ok@example.com", "@example.com"] }),
      problem: /email\.to\[1\] is not an email address/,
    },
    {
      name: "a bad SMTP host",
      value: email({}, { host: "smtp example com" }),
      problem: /smtp\.host is not a host name/,
    },
    {
      name: "a port out of range",
      value: email({}, { port: 70000 }),
      problem: /smtp\.port must be a port number from 1 to 65535/,
    },
    {
      name: "an unknown security mode",
      value: email({}, { security: "ssl" }),
      problem: /smtp\.security must be starttls, tls or none/,
    },
    {
      name: "a password over an unencrypted connection",
      value: email({}, { security: "none", credentialsSecretRef: { name: "smtp" } }),
      problem: /credentialsSecretRef would send the password unencrypted: use security starttls or tls/,
    },
    {
      name: "a password written into the config",
      value: email({}, { password: "hunter2" }),
      problem: /smtp\.password is not a known field/,
    },
    {
      name: "a bad Secret name",
      value: {
        notifications: { receivers: [{ name: "a", webhook: { urlSecretRef: { name: "Slack_URL", key: "url" } } }] },
      },
      problem: /urlSecretRef\.name is not a Secret name/,
    },
  ];
  for (const { name, value, problem } of bad)
    it(`refuses ${name}, naming the field`, () => {
      assert.throws(
        () => checkOperatorConfig(value, "ConfigMap ksr-system/ksr-operator-config"),
        (error: unknown) =>
          error instanceof OperatorConfigError &&
          error.message.startsWith("ConfigMap ksr-system/ksr-operator-config is not a valid operator configuration") &&
          problem.test(error.message),
      );
    });

  it("reports every problem at once", () => {
    assert.throws(
      () => checkOperatorConfig(email({ from: "x", to: ["y"] }, { port: 0 }), "f"),
      (error: unknown) => error instanceof OperatorConfigError && error.problems.length === 3,
    );
  });

  it("refuses text that is not YAML", () => {
    assert.throws(
      () => parseOperatorConfig("notifications: [", "f"),
      /f is not a valid operator configuration:\n {2}- is not YAML/,
    );
  });
});

describe("notifications: which Events are told, and how they read", () => {
  const table: [string | undefined, string, string | undefined][] = [
    ["ProtectedMachine", "HealthChanged", "MachineHealth"],
    ["ProtectedMachine", "RpoThresholdExceeded", "RpoThreshold"],
    ["ProtectedMachine", "RpoWithinThreshold", "RpoThreshold"],
    ["ProtectedMachine", "Protected", undefined],
    ["FailoverRun", "RunSucceeded", "RunResult"],
    ["FailoverRun", "RunFailed", "RunResult"],
    ["FailoverRun", "RunCommitted", "RunResult"],
    ["FailoverRun", "StepSucceeded", undefined],
    ["RecoveryPlan", "RunFailed", undefined],
    [undefined, "HealthChanged", undefined],
  ];
  for (const [kind, reason, category] of table)
    it(`${kind ?? "no kind"} ${reason} → ${category ?? "nobody"}`, () => {
      assert.equal(notificationCategory(kind, reason), category);
    });

  const notification: Notification = {
    category: "RunResult",
    type: "Warning",
    kind: "FailoverRun",
    namespace: "shop",
    name: "failover-1",
    reason: "RunFailed",
    note: "start-db failed: timed out after 5m",
    time: "2026-12-01T12:00:00.000Z",
  };

  it("the webhook body is Slack's incoming-webhook JSON", () => {
    const body = slackBody(notification) as { text: string; attachments: { color: string; ts: number }[] };
    assert.equal(body.text, "[Warning] FailoverRun shop/failover-1: RunFailed: start-db failed: timed out after 5m");
    assert.equal(body.attachments[0]?.color, "danger");
    assert.equal(body.attachments[0].ts, Date.parse(notification.time) / 1000);
  });

  it("the mail names the object and how to look at it", () => {
    const { subject, text } = emailText(notification);
    assert.equal(subject, "[kube-site-recovery] [Warning] FailoverRun shop/failover-1: RunFailed");
    assert.match(text, /^start-db failed: timed out after 5m$/m);
    assert.match(text, /^kubectl -n shop describe failoverrun failover-1$/m);
  });
});
