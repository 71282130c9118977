// The operator's configuration file (the `config.yaml` key of the ksr-operator-config ConfigMap,
// written by the Helm chart from its values and by `ksr install --config FILE`). Today it has one
// section, `notifications`. Everything is checked before the operator starts: an error names the
// path of the bad value and what to write instead. Credentials are never in this file, only
// references to Secrets in the operator's namespace.
import { parse as parseYaml } from "yaml";
import { configMaps, type KubeClient } from "../runtime/index.js";

export const operatorConfigMapName = "ksr-operator-config";
export const operatorConfigKey = "config.yaml";

/** What a receiver can be told about. */
export const notificationCategories = ["MachineHealth", "RpoThreshold", "RunResult"] as const;
export type NotificationCategory = (typeof notificationCategories)[number];

export interface SecretKeyRef {
  /** A Secret in the operator's namespace. */
  name: string;
  key: string;
}

export interface WebhookReceiver {
  /** Either the URL itself or, for URLs that are credentials (Slack's), a Secret key holding it. */
  url?: string;
  urlSecretRef?: SecretKeyRef;
}

export type SmtpSecurity = "starttls" | "tls" | "none";

export interface EmailReceiver {
  smtp: {
    host: string;
    port: number;
    /** starttls: upgrade a plain connection (port 587); tls: TLS from the start (465); none: never encrypt. */
    security: SmtpSecurity;
    /** PEM CA bundle to trust for the server's certificate (a private relay); default the system's. */
    caSecretRef?: SecretKeyRef;
    /** A Secret with the SMTP user name and password under these keys. */
    credentialsSecretRef?: { name: string; usernameKey: string; passwordKey: string };
  };
  from: string;
  to: string[];
}

export interface Receiver {
  name: string;
  categories: NotificationCategory[];
  webhook?: WebhookReceiver;
  email?: EmailReceiver;
}

export interface NotificationsConfig {
  receivers: Receiver[];
}

export interface OperatorConfig {
  notifications: NotificationsConfig;
}

export const emptyOperatorConfig: OperatorConfig = { notifications: { receivers: [] } };

export class OperatorConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source} is not a valid operator configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "OperatorConfigError";
  }
}

type Json = unknown;
const isObject = (value: Json): value is Record<string, Json> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

// RFC 5321 mailbox, as far as an operator's configuration needs: local@domain, no display names.
const mailboxPattern =
  /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const hostPattern =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const ipv4Pattern = /^\d{1,3}(?:\.\d{1,3}){3}$/;
const namePattern = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const secretKeyPattern = /^[-._a-zA-Z0-9]+$/;

/** Why the URL cannot be a webhook's, or undefined when it can. */
export function webhookUrlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "is not a URL (write it as https://host/path)";
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    return `has scheme ${url.protocol.replace(/:$/, "")}; only https (or http inside the cluster) is sent to`;
  if (url.username !== "" || url.password !== "")
    return "carries credentials in the URL; put the whole URL in a Secret and use urlSecretRef";
  if (url.hostname === "") return "has no host";
  return undefined;
}

export function mailboxProblem(text: string): string | undefined {
  if (text.length > 254) return "is longer than 254 characters";
  return mailboxPattern.test(text) ? undefined : "is not an email address of the form name@example.com";
}

class Checker {
  readonly problems: string[] = [];

  fail(path: string, message: string): void {
    this.problems.push(`${path} ${message}`);
  }

  object(value: Json, path: string, allowed: readonly string[]): Record<string, Json> | undefined {
    if (!isObject(value)) {
      this.fail(path, "must be a mapping");
      return undefined;
    }
    for (const key of Object.keys(value))
      if (!allowed.includes(key)) this.fail(`${path}.${key}`, `is not a known field (known: ${allowed.join(", ")})`);
    return value;
  }

  string(value: Json, path: string, check?: (text: string) => string | undefined): string | undefined {
    if (typeof value !== "string" || value === "") {
      this.fail(path, "must be a non-empty string");
      return undefined;
    }
    const problem = check?.(value);
    if (problem === undefined) return value;
    this.fail(path, problem);
    return undefined;
  }

  secretKeyRef(value: Json, path: string): SecretKeyRef | undefined {
    const ref = this.object(value, path, ["name", "key"]);
    if (ref === undefined) return undefined;
    const name = this.string(ref.name, `${path}.name`, secretName);
    const key = this.string(ref.key, `${path}.key`, secretKey);
    return name === undefined || key === undefined ? undefined : { name, key };
  }
}

const secretName = (text: string) =>
  text.length <= 253 && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(text)
    ? undefined
    : "is not a Secret name (lower-case letters, digits, '-' and '.')";
const secretKey = (text: string) =>
  secretKeyPattern.test(text) ? undefined : "is not a Secret key (letters, digits, '-', '_' and '.')";

function webhookOf(check: Checker, value: Json, path: string): WebhookReceiver | undefined {
  const hook = check.object(value, path, ["url", "urlSecretRef"]);
  if (hook === undefined) return undefined;
  if ((hook.url === undefined) === (hook.urlSecretRef === undefined)) {
    check.fail(path, "needs exactly one of url and urlSecretRef");
    return undefined;
  }
  if (hook.url !== undefined) {
    const url = check.string(hook.url, `${path}.url`, webhookUrlProblem);
    return url === undefined ? undefined : { url };
  }
  const urlSecretRef = check.secretKeyRef(hook.urlSecretRef, `${path}.urlSecretRef`);
  return urlSecretRef === undefined ? undefined : { urlSecretRef };
}

function portOf(check: Checker, value: Json, path: string, fallback: number): number | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    check.fail(path, `must be a port number from 1 to 65535, got ${JSON.stringify(value)}`);
    return undefined;
  }
  return value;
}

function emailOf(check: Checker, value: Json, path: string): EmailReceiver | undefined {
  const email = check.object(value, path, ["smtp", "from", "to"]);
  if (email === undefined) return undefined;
  const smtpPath = `${path}.smtp`;
  const smtp = check.object(email.smtp, smtpPath, ["host", "port", "security", "caSecretRef", "credentialsSecretRef"]);
  const from = check.string(email.from, `${path}.from`, mailboxProblem);
  let to: string[] | undefined;
  if (!Array.isArray(email.to) || email.to.length === 0)
    check.fail(`${path}.to`, "must be a list of one or more addresses");
  else {
    const checked = email.to.map((address, i) => check.string(address, `${path}.to[${i}]`, mailboxProblem));
    if (checked.every((address) => address !== undefined)) to = checked;
  }
  if (smtp === undefined) return undefined;
  const host = check.string(smtp.host, `${smtpPath}.host`, (text) =>
    hostPattern.test(text) || ipv4Pattern.test(text) ? undefined : "is not a host name or IPv4 address",
  );
  const security = smtp.security ?? "starttls";
  if (security !== "starttls" && security !== "tls" && security !== "none")
    check.fail(`${smtpPath}.security`, `must be starttls, tls or none, got ${JSON.stringify(security)}`);
  const port = portOf(check, smtp.port, `${smtpPath}.port`, security === "tls" ? 465 : 587);
  const caSecretRef =
    smtp.caSecretRef === undefined ? undefined : check.secretKeyRef(smtp.caSecretRef, `${smtpPath}.caSecretRef`);
  let credentialsSecretRef: EmailReceiver["smtp"]["credentialsSecretRef"];
  if (smtp.credentialsSecretRef !== undefined) {
    const credPath = `${smtpPath}.credentialsSecretRef`;
    const ref = check.object(smtp.credentialsSecretRef, credPath, ["name", "usernameKey", "passwordKey"]);
    if (ref !== undefined) {
      const name = check.string(ref.name, `${credPath}.name`, secretName);
      const usernameKey = check.string(ref.usernameKey ?? "username", `${credPath}.usernameKey`, secretKey);
      const passwordKey = check.string(ref.passwordKey ?? "password", `${credPath}.passwordKey`, secretKey);
      if (name !== undefined && usernameKey !== undefined && passwordKey !== undefined)
        credentialsSecretRef = { name, usernameKey, passwordKey };
    }
    if (security === "none") check.fail(credPath, "would send the password unencrypted: use security starttls or tls");
  }
  if (host === undefined || port === undefined || from === undefined || to === undefined) return undefined;
  return {
    smtp: {
      host,
      port,
      security: security as SmtpSecurity,
      ...(caSecretRef === undefined ? {} : { caSecretRef }),
      ...(credentialsSecretRef === undefined ? {} : { credentialsSecretRef }),
    },
    from,
    to,
  };
}

function receiverOf(check: Checker, value: Json, path: string, seen: Set<string>): Receiver | undefined {
  const receiver = check.object(value, path, ["name", "categories", "webhook", "email"]);
  if (receiver === undefined) return undefined;
  const name = check.string(receiver.name, `${path}.name`, (text) =>
    namePattern.test(text) ? undefined : "must be a DNS label (lower-case letters, digits and '-')",
  );
  if (name !== undefined && seen.has(name)) check.fail(`${path}.name`, `repeats receiver ${name}`);
  if (name !== undefined) seen.add(name);
  let categories: NotificationCategory[] = [...notificationCategories];
  if (receiver.categories !== undefined) {
    const list = receiver.categories;
    if (!Array.isArray(list) || list.length === 0)
      check.fail(`${path}.categories`, `must be a list of ${notificationCategories.join(", ")}`);
    else
      categories = list.filter((category, i): category is NotificationCategory => {
        if (notificationCategories.includes(category as NotificationCategory)) return true;
        check.fail(
          `${path}.categories[${i}]`,
          `must be one of ${notificationCategories.join(", ")}, got ${JSON.stringify(category)}`,
        );
        return false;
      });
  }
  if ((receiver.webhook === undefined) === (receiver.email === undefined)) {
    check.fail(path, "needs exactly one of webhook and email");
    return undefined;
  }
  const webhook = receiver.webhook === undefined ? undefined : webhookOf(check, receiver.webhook, `${path}.webhook`);
  const email = receiver.email === undefined ? undefined : emailOf(check, receiver.email, `${path}.email`);
  if (name === undefined || (webhook === undefined && email === undefined)) return undefined;
  return { name, categories, ...(webhook === undefined ? {} : { webhook }), ...(email === undefined ? {} : { email }) };
}

/** Checks a parsed configuration; source names it in the error (a file or a ConfigMap). */
export function checkOperatorConfig(value: Json, source: string): OperatorConfig {
  const check = new Checker();
  if (value === null || value === undefined) return emptyOperatorConfig;
  const root = check.object(value, "config", ["notifications"]);
  const receivers: Receiver[] = [];
  if (root?.notifications !== undefined && root.notifications !== null) {
    const notifications = check.object(root.notifications, "notifications", ["receivers"]);
    const list = notifications?.receivers ?? [];
    if (!Array.isArray(list)) check.fail("notifications.receivers", "must be a list");
    else {
      const seen = new Set<string>();
      list.forEach((item: Json, i) => {
        const receiver = receiverOf(check, item, `notifications.receivers[${i}]`, seen);
        if (receiver !== undefined) receivers.push(receiver);
      });
    }
  }
  if (check.problems.length > 0) throw new OperatorConfigError(source, check.problems);
  return { notifications: { receivers } };
}

export function parseOperatorConfig(text: string, source: string): OperatorConfig {
  let value: Json;
  try {
    value = parseYaml(text) as Json;
  } catch (error) {
    throw new OperatorConfigError(source, [`is not YAML: ${error instanceof Error ? error.message : String(error)}`]);
  }
  return checkOperatorConfig(value, source);
}

/** The configuration in the named ConfigMap of the operator's namespace; none there is the empty one. */
export async function readOperatorConfig(client: KubeClient, namespace: string, name: string): Promise<OperatorConfig> {
  const configMap = await client.get(configMaps, name, namespace);
  if (configMap === undefined) return emptyOperatorConfig;
  const text = configMap.data?.[operatorConfigKey];
  const source = `ConfigMap ${namespace}/${name}`;
  if (text === undefined) throw new OperatorConfigError(source, [`has no key ${operatorConfigKey}`]);
  return parseOperatorConfig(text, `${source} key ${operatorConfigKey}`);
}
