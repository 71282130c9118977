// Where a notification goes: a webhook (Slack-compatible JSON) or email over SMTP. Each channel
// reads its Secrets when it sends, so a rotated password or webhook URL is used without a restart,
// and reports failures without the Secrets' values (redactSecrets).
import { createTransport } from "nodemailer";
import { secrets, type KubeClient } from "../runtime/index.js";
import type { EmailReceiver, SecretKeyRef, WebhookReceiver } from "./config.js";
import { webhookUrlProblem } from "./config.js";

export interface Notification {
  category: string;
  type: "Normal" | "Warning";
  kind: string;
  namespace: string;
  name: string;
  reason: string;
  note: string;
  /** RFC 3339. */
  time: string;
}

export interface Channel {
  /** Rejects with an error whose message holds no Secret value. */
  send(notification: Notification, signal: AbortSignal): Promise<void>;
}

/** Reads Secret keys in the operator's namespace; remembers every value it handed out, for redaction. */
export class SecretReader {
  private readonly seen = new Set<string>();

  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
  ) {}

  async value(ref: SecretKeyRef, what: string): Promise<string> {
    const secret = await this.client.get(secrets, ref.name, this.namespace);
    if (secret === undefined) throw new Error(`${what}: Secret ${this.namespace}/${ref.name} does not exist`);
    const encoded = secret.data?.[ref.key];
    if (encoded === undefined) throw new Error(`${what}: Secret ${this.namespace}/${ref.name} has no key ${ref.key}`);
    const value = Buffer.from(encoded, "base64").toString("utf8").trim();
    if (value === "") throw new Error(`${what}: key ${ref.key} of Secret ${this.namespace}/${ref.name} is empty`);
    this.seen.add(value);
    return value;
  }

  /** The text with every Secret value read so far (and its URL-encoded form) replaced. */
  redact(text: string): string {
    let out = text;
    for (const value of this.seen)
      for (const form of new Set([value, encodeURIComponent(value)])) out = out.split(form).join("[redacted]");
    return out;
  }
}

const title = (n: Notification) => `[${n.type}] ${n.kind} ${n.namespace}/${n.name}: ${n.reason}`;

/** Slack's incoming-webhook body (text plus a coloured attachment), also read by Mattermost and Rocket.Chat. */
export function slackBody(n: Notification): Record<string, unknown> {
  return {
    text: `${title(n)}: ${n.note}`,
    attachments: [
      {
        color: n.type === "Warning" ? "danger" : "good",
        title: title(n),
        text: n.note,
        fields: [
          { title: "Category", value: n.category, short: true },
          { title: "Namespace", value: n.namespace, short: true },
          { title: n.kind, value: n.name, short: true },
          { title: "Reason", value: n.reason, short: true },
        ],
        ts: Math.floor(Date.parse(n.time) / 1000),
      },
    ],
  };
}

export class WebhookChannel implements Channel {
  constructor(
    private readonly receiver: WebhookReceiver,
    private readonly secretReader: SecretReader,
  ) {}

  async send(notification: Notification, signal: AbortSignal): Promise<void> {
    const url =
      this.receiver.url ?? (await this.secretReader.value(this.receiver.urlSecretRef as SecretKeyRef, "webhook URL"));
    const problem = webhookUrlProblem(url);
    // The URL came from a Secret: name the Secret, never show the URL.
    if (problem !== undefined) throw new Error(`the webhook URL in its Secret ${problem}`);
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(slackBody(notification)),
      signal,
      redirect: "error",
    });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`webhook answered HTTP ${response.status}`);
  }
}

export function emailText(n: Notification): { subject: string; text: string } {
  return {
    subject: `[kube-site-recovery] ${title(n)}`,
    text: [
      n.note,
      "",
      `${n.kind}: ${n.namespace}/${n.name}`,
      `Reason: ${n.reason} (${n.type})`,
      `Category: ${n.category}`,
      `Time: ${n.time}`,
      "",
      `kubectl -n ${n.namespace} describe ${n.kind.toLowerCase()} ${n.name}`,
    ].join("\n"),
  };
}

export class EmailChannel implements Channel {
  constructor(
    private readonly receiver: EmailReceiver,
    private readonly secretReader: SecretReader,
  ) {}

  async send(notification: Notification, signal: AbortSignal): Promise<void> {
    const { smtp } = this.receiver;
    const credentials = smtp.credentialsSecretRef;
    const auth =
      credentials === undefined
        ? undefined
        : {
            user: await this.secretReader.value(
              { name: credentials.name, key: credentials.usernameKey },
              "SMTP user name",
            ),
            pass: await this.secretReader.value(
              { name: credentials.name, key: credentials.passwordKey },
              "SMTP password",
            ),
          };
    const ca = smtp.caSecretRef === undefined ? undefined : await this.secretReader.value(smtp.caSecretRef, "SMTP CA");
    const transport = createTransport({
      host: smtp.host,
      port: smtp.port,
      secure: smtp.security === "tls",
      requireTLS: smtp.security === "starttls",
      ignoreTLS: smtp.security === "none",
      ...(auth === undefined ? {} : { auth }),
      ...(ca === undefined ? {} : { tls: { ca } }),
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 20_000,
      logger: false,
      debug: false,
    });
    const abort = () => {
      transport.close();
    };
    signal.addEventListener("abort", abort, { once: true });
    try {
      await transport.sendMail({ from: this.receiver.from, to: this.receiver.to, ...emailText(notification) });
    } finally {
      signal.removeEventListener("abort", abort);
      transport.close();
    }
  }
}
