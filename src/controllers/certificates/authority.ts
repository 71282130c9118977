// The operator's certificate authority: a Secret in the install namespace,
// created by the first operator that starts and read by every later one. Its
// key never leaves that Secret and the operator's memory, and is never logged.
import {
  createCertificateAuthority,
  loadCertificateAuthority,
  type CertificateAuthority,
} from "../../pki/certificates.js";
import { isAlreadyExists, secrets, type KubeClient, type Secret } from "../../runtime/index.js";

export const caSecretName = "ksr-ca";
const caValidDays = 3650;

const decode = (value: string | undefined): string | undefined =>
  value === undefined ? undefined : Buffer.from(value, "base64").toString("utf8");

function authorityFrom(secret: Secret): CertificateAuthority {
  const cert = decode(secret.data?.["tls.crt"]);
  const key = decode(secret.data?.["tls.key"]);
  if (cert === undefined || key === undefined) {
    const where = `${secret.metadata.namespace ?? ""}/${secret.metadata.name}`;
    throw new Error(
      `CA Secret ${where} lacks tls.crt or tls.key; delete it to have a new CA made (replicators then get new certificates)`,
    );
  }
  return loadCertificateAuthority({ cert, key });
}

/** Loads the CA from its Secret, or creates both; two operators racing end up with the same CA. */
export async function ensureAuthority(client: KubeClient, namespace: string): Promise<CertificateAuthority> {
  const existing = await client.get(secrets, caSecretName, namespace);
  if (existing !== undefined) return authorityFrom(existing);
  const authority = await createCertificateAuthority(`kube-site-recovery CA (${namespace})`, caValidDays);
  const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
  try {
    await client.create(secrets, {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name: caSecretName,
        namespace,
        labels: { "app.kubernetes.io/part-of": "kube-site-recovery", "app.kubernetes.io/component": "ca" },
      },
      data: { "tls.crt": encode(authority.cert), "tls.key": encode(authority.key) },
    });
    return authority;
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
    const winner = await client.get(secrets, caSecretName, namespace);
    if (winner === undefined) throw error;
    return authorityFrom(winner);
  }
}
