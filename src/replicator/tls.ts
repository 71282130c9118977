// Mutual TLS for every replicator connection. Certificates come from files (the operator
// issues them from its CA); a peer's role is its certificate's common name.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ChannelCredentials, ServerCredentials, status } from "@grpc/grpc-js";

/** The part of every server call this module needs. */
interface ServerSurfaceCall {
  getAuthContext(): { sslPeerCertificate?: { subject: { CN?: string | string[] } } };
}
import { createCertificateAuthority } from "../pki/certificates.js";

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export const processServerCommonName = "ksr-process-server";
export const operatorCommonName = "ksr-operator";
export const masterTargetCommonName = "ksr-master-target";
/** A consistency group's coordinator: may hold, mark and release agents (their Barrier service). */
export const coordinatorCommonName = "ksr-coordinator";

/** The common name an agent's certificate must carry to push changes for a machine. */
export function agentCommonName(machineId: string): string {
  return `ksr-agent:${machineId}`;
}

async function readTls(files: TlsFiles): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const [ca, cert, key] = await Promise.all([readFile(files.ca), readFile(files.cert), readFile(files.key)]);
  return { ca, cert, key };
}

export async function serverCredentials(files: TlsFiles): Promise<ServerCredentials> {
  const { ca, cert, key } = await readTls(files);
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], true);
}

export async function clientCredentials(files: TlsFiles): Promise<ChannelCredentials> {
  const { ca, cert, key } = await readTls(files);
  return ChannelCredentials.createSsl(ca, key, cert);
}

export class PermissionError extends Error {
  readonly code = status.PERMISSION_DENIED;
}

/** The verified common name of the client certificate on a call. */
export function peerCommonName(call: ServerSurfaceCall): string {
  const certificate = call.getAuthContext().sslPeerCertificate;
  const commonName = certificate?.subject.CN;
  if (typeof commonName !== "string" || commonName === "")
    throw new PermissionError("the client presented no certificate with a common name");
  return commonName;
}

export function requirePeer(call: ServerSurfaceCall, allowed: readonly string[]): void {
  const commonName = peerCommonName(call);
  if (!allowed.includes(commonName))
    throw new PermissionError(`certificate "${commonName}" may not call this service (allowed: ${allowed.join(", ")})`);
}

/** Options every replicator channel and server shares: large frames, keepalive to notice dead peers. */
export const grpcOptions = {
  "grpc.max_receive_message_length": 80 * 1024 * 1024,
  "grpc.max_send_message_length": 80 * 1024 * 1024,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.max_pings_without_data": 0,
  "grpc-node.max_session_memory": 256,
  // Reconnect quickly after a peer restarts (the default backoff grows to two minutes).
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 2000,
} as const;

/** Writes a throwaway CA and one identity per name for loopback use (`ksr replicate`, tests). */
export async function writeLoopbackPki(dir: string, commonNames: readonly string[]): Promise<Map<string, TlsFiles>> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = await createCertificateAuthority("ksr-replicate throwaway CA", 2);
  const caFile = join(dir, "ca.crt");
  await writeFile(caFile, ca.cert);
  const identities = new Map<string, TlsFiles>();
  for (const commonName of commonNames) {
    const pair = await ca.issue({
      commonName,
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1"],
      usage: "both",
      validDays: 2,
    });
    const base = commonName.replace(/[^A-Za-z0-9.-]/g, "_");
    const files = { ca: caFile, cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) };
    await writeFile(files.cert, pair.cert);
    await writeFile(files.key, pair.key, { mode: 0o600 });
    identities.set(commonName, files);
  }
  return identities;
}
