// Kubeconfig files with embedded credentials, as kubeadm writes them.
import { stringify } from "yaml";
import type { PemKeyPair } from "../pki/certificates.js";

const b64 = (pem: string) => Buffer.from(pem).toString("base64");

export function renderKubeconfig(options: {
  server: string;
  caCert: string;
  user: string;
  client: PemKeyPair;
}): string {
  const name = "ksr-local";
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name, cluster: { server: options.server, "certificate-authority-data": b64(options.caCert) } }],
    users: [
      {
        name: options.user,
        user: { "client-certificate-data": b64(options.client.cert), "client-key-data": b64(options.client.key) },
      },
    ],
    contexts: [{ name, context: { cluster: name, user: options.user, namespace: "default" } }],
    "current-context": name,
    preferences: {},
  });
}
