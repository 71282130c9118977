// Replicator identities as Secrets, issued from the operator's CA.
//
// Renewal: a certificate is replaced once two thirds of its life have passed
// (agents live 7 days, servers 30), by rewriting the Secret's content; the
// kubelet refreshes the mounted files and replicators re-read them
// (src/replicator/tls.ts), so open streams go on and new connections use the
// new certificate.
//
// Revocation: when a machine is deleted its agent's Secret is deleted and the
// certificate's serial is added to the revocation list, a ConfigMap in the
// same namespace that process servers mount (--revoked-serials) and check on
// every call. Entries leave the list once the certificate has expired, so it
// stays short: agent certificates are short-lived for that reason.
import * as x509 from "@peculiar/x509";
import type { CertificateAuthority } from "../../pki/certificates.js";
import { checkMachineId } from "../../replicator/machine-id.js";
import { commonNameOf, machineBoundRoles, normalizeSerial, replicatorRoles } from "../../replicator/tls.js";
import {
  configMaps,
  controllerReference,
  isAlreadyExists,
  isConflict,
  secrets,
  type Clock,
  type KubeClient,
  type Secret,
} from "../../runtime/index.js";
import { ensureAuthority } from "./authority.js";
import type { CertificateIssuer, ReplicatorCertificateRequest } from "./issuer.js";

export const revocationListName = "ksr-revoked-agents";
/** Serials (and expiry) of certificates this Secret held before: revoking the identity revokes them too. */
const earlierSerialsAnnotation = "dr.ksr.io/earlier-serials";
export const revocationListKey = "serials";
/** A certificate is renewed once this fraction of its life has passed. */
const renewAfter = 2 / 3;

export interface SecretIssuerOptions {
  /** The operator's (fenced) client. */
  client: KubeClient;
  /** Where the CA Secret lives: the install namespace. */
  caNamespace: string;
  clock: Clock;
  /** Lifetimes in days (defaults: agents 7, servers 30). */
  validDays?: { agent: number; server: number };
}

const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
const decode = (value: string | undefined) =>
  value === undefined ? "" : Buffer.from(value, "base64").toString("utf8");

/** The Secret's name: ksr-<role>-tls, or ksr-<agent|hydrator>-<machine id>-tls. */
export function certificateSecretName(request: Pick<ReplicatorCertificateRequest, "role" | "machineId">): string {
  const suffix = machineBoundRoles.includes(request.role)
    ? `-${(request.machineId ?? "").toLowerCase().replaceAll("_", "-")}`
    : "";
  return `ksr-${request.role}${suffix}-tls`;
}

function validate(request: ReplicatorCertificateRequest): void {
  if (!replicatorRoles.includes(request.role))
    throw new Error(`unknown replicator role ${request.role as string}; use one of ${replicatorRoles.join(", ")}`);
  if (machineBoundRoles.includes(request.role)) {
    if (request.machineId === undefined)
      throw new Error(
        `${/^[aeiou]/.test(request.role) ? "an" : "a"} ${request.role} certificate needs the machine id it acts for`,
      );
    checkMachineId(request.machineId);
  } else if (request.machineId !== undefined) {
    throw new Error(`a ${request.role} certificate is not bound to a machine; drop machineId`);
  }
}

export class SecretIssuer implements CertificateIssuer {
  private authority: Promise<CertificateAuthority> | undefined;

  constructor(private readonly options: SecretIssuerOptions) {}

  async ensureReplicatorCertificate(request: ReplicatorCertificateRequest): Promise<string> {
    validate(request);
    const { client } = this.options;
    const name = certificateSecretName(request);
    const commonName = commonNameOf({ role: request.role, machineId: request.machineId });
    const dnsNames = [...(request.dnsNames ?? [])].sort();
    const authority = await this.ca();
    const existing = await client.get(secrets, name, request.namespace);
    if (existing !== undefined && (await this.isCurrent(existing, authority, commonName, dnsNames))) return name;

    const days = machineBoundRoles.includes(request.role)
      ? (this.options.validDays?.agent ?? 7)
      : (this.options.validDays?.server ?? 30);
    const pair = await authority.issue({ commonName, dnsNames, usage: "both", validDays: days });
    const secret: Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name,
        namespace: request.namespace,
        labels: { "app.kubernetes.io/part-of": "kube-site-recovery", "dr.ksr.io/role": request.role },
        annotations: { "dr.ksr.io/common-name": commonName },
        ...(request.owner === undefined ? {} : { ownerReferences: [controllerReference(request.owner)] }),
      },
      data: { "tls.crt": encode(pair.cert), "tls.key": encode(pair.key), "ca.crt": encode(authority.cert) },
    };
    if (existing === undefined) {
      await client.create(secrets, secret).catch((error: unknown) => {
        // Another reconcile made it a moment ago: theirs is as good as ours.
        if (!isAlreadyExists(error)) throw error;
      });
    } else {
      // Same Secret, new content: mounted files change in place, so pods need no restart.
      const now = this.options.clock.now();
      const earlier = [...issuedSerials(existing)].filter((entry) => Date.parse(entry.notAfter) > now);
      secret.metadata.annotations = {
        ...secret.metadata.annotations,
        [earlierSerialsAnnotation]: earlier.map((entry) => `${entry.serial} ${entry.notAfter}`).join(","),
      };
      secret.metadata.resourceVersion = existing.metadata.resourceVersion;
      await client.replace(secrets, { ...existing, ...secret, metadata: { ...existing.metadata, ...secret.metadata } });
    }
    return name;
  }

  async revokeAgent(ref: { namespace: string; machineId: string }): Promise<void> {
    const { client } = this.options;
    const name = certificateSecretName({ role: "agent", machineId: ref.machineId });
    const secret = await client.get(secrets, name, ref.namespace);
    if (secret !== undefined) await this.addToRevocationList(ref.namespace, [...issuedSerials(secret)], ref.machineId);
    await client.delete(secrets, { name, namespace: ref.namespace });
  }

  private ca(): Promise<CertificateAuthority> {
    this.authority ??= ensureAuthority(this.options.client, this.options.caNamespace).catch((error: unknown) => {
      this.authority = undefined;
      throw error;
    });
    return this.authority;
  }

  /** Issued by this CA, for this identity, and not past two thirds of its life. */
  private async isCurrent(
    secret: Secret,
    authority: CertificateAuthority,
    commonName: string,
    dnsNames: string[],
  ): Promise<boolean> {
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(decode(secret.data?.["tls.crt"]));
    } catch {
      return false;
    }
    const ca = new x509.X509Certificate(authority.cert);
    if (!(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }))) return false;
    if (decode(secret.data?.["ca.crt"]) !== authority.cert) return false;
    if (cert.subjectName.getField("CN")[0] !== commonName) return false;
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    const names = (san?.names.items ?? [])
      .filter((n) => n.type === "dns")
      .map((n) => n.value)
      .sort();
    if (names.join(",") !== dnsNames.join(",")) return false;
    const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
    return this.options.clock.now() < cert.notBefore.getTime() + lifetime * renewAfter;
  }

  private async addToRevocationList(namespace: string, revoked: IssuedSerial[], machineId: string): Promise<void> {
    const { client, clock } = this.options;
    for (;;) {
      const existing = await client.get(configMaps, revocationListName, namespace);
      const now = clock.now();
      const kept = (existing?.data?.[revocationListKey] ?? "")
        .split("\n")
        .filter((line) => line.trim() !== "")
        .filter((line) => {
          const [entrySerial = "", expires = ""] = line.split(/\s+/);
          return !revoked.some((entry) => entry.serial === entrySerial) && Date.parse(expires) > now;
        });
      const added = revoked.map((entry) => `${entry.serial} ${entry.notAfter} ${machineId}`);
      const data = { [revocationListKey]: [...kept, ...added].join("\n") + "\n" };
      try {
        if (existing === undefined) {
          await client.create(configMaps, {
            apiVersion: "v1",
            kind: "ConfigMap",
            metadata: {
              name: revocationListName,
              namespace,
              labels: { "app.kubernetes.io/part-of": "kube-site-recovery" },
            },
            data,
          });
        } else {
          await client.replace(configMaps, { ...existing, data });
        }
        return;
      } catch (error) {
        // Two revocations at once: read the list again and add ours to theirs.
        if (!isAlreadyExists(error) && !isConflict(error)) throw error;
      }
    }
  }
}

interface IssuedSerial {
  serial: string;
  /** ISO time. */
  notAfter: string;
}

/** The Secret's current certificate and the earlier ones it held (still valid until they expire). */
function* issuedSerials(secret: Secret): Generator<IssuedSerial> {
  try {
    const cert = new x509.X509Certificate(decode(secret.data?.["tls.crt"]));
    yield { serial: normalizeSerial(cert.serialNumber), notAfter: cert.notAfter.toISOString() };
  } catch {
    // Not a certificate (someone edited the Secret): nothing of it can be presented anyway.
  }
  for (const entry of (secret.metadata.annotations?.[earlierSerialsAnnotation] ?? "").split(",")) {
    const [serial, notAfter] = entry.trim().split(" ");
    if (serial !== undefined && serial !== "" && notAfter !== undefined) yield { serial, notAfter };
  }
}
