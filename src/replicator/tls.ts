// Mutual TLS for every replicator connection. Certificates come from files (the operator
// issues them from its CA as Secrets, mounted into the pods) and are re-read when they
// change, so a renewal reaches new connections while open streams keep going. A peer's
// identity is its certificate's common name: the role ("ksr-process-server") and, for an
// agent, the one machine it may push for ("ksr-agent:<machine id>").
import { readFileSync, statSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ChannelCredentials, ServerCredentials, experimental, status } from "@grpc/grpc-js";
import { createCertificateAuthority } from "../pki/certificates.js";

/** The part of every server call this module needs. */
interface ServerSurfaceCall {
  getAuthContext(): { sslPeerCertificate?: { subject: { CN?: string | string[] }; serialNumber?: string } };
}

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

export const replicatorRoles = [
  "agent",
  "process-server",
  "master-target",
  "coordinator",
  "operator",
  "hydrator",
] as const;
export type ReplicatorRole = (typeof replicatorRoles)[number];

/**
 * Roles bound to one machine: an agent pushes that machine's changes; a hydrator (a drill's
 * hydration pod) may only list and hydrate that machine's points ("ksr-hydrator:<machine id>").
 */
export const machineBoundRoles: readonly ReplicatorRole[] = ["agent", "hydrator"];

export interface PeerIdentity {
  role: ReplicatorRole;
  /** Agents and hydrators only: the one machine the identity acts for. */
  machineId?: string;
}

/** The common name that carries an identity. */
export function commonNameOf(identity: PeerIdentity): string {
  if (machineBoundRoles.includes(identity.role)) {
    if (identity.machineId === undefined || identity.machineId === "")
      throw new Error(`the ${identity.role} identity needs a machine id`);
    return `ksr-${identity.role}:${identity.machineId}`;
  }
  if (identity.machineId !== undefined) throw new Error(`a ${identity.role} identity carries no machine id`);
  return `ksr-${identity.role}`;
}

/** The identity a common name carries, or undefined for a name no replicator certificate has. */
export function parseCommonName(commonName: string): PeerIdentity | undefined {
  for (const bound of machineBoundRoles) {
    const prefix = `ksr-${bound}:`;
    if (!commonName.startsWith(prefix)) continue;
    const machineId = commonName.slice(prefix.length);
    return machineId === "" ? undefined : { role: bound, machineId };
  }
  const role = replicatorRoles.find(
    (candidate) => !machineBoundRoles.includes(candidate) && commonName === `ksr-${candidate}`,
  );
  return role === undefined ? undefined : { role };
}

/** The common name an agent's certificate must carry to push changes for a machine. */
export function agentCommonName(machineId: string): string {
  return commonNameOf({ role: "agent", machineId });
}

async function readTls(files: TlsFiles): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const [ca, cert, key] = await Promise.all([readFile(files.ca), readFile(files.cert), readFile(files.key)]);
  return { ca, cert, key };
}

/** How often certificate files are checked for a renewal (the operator renews days before expiry). */
const certificateRefreshMs = 30_000;

/**
 * A provider that follows the files, primed: it has read them once before it
 * is handed to grpc-js, so the first handshake already has a certificate (an
 * unprimed server resets connections until its first read completes).
 */
async function fileWatcher(files: TlsFiles): Promise<experimental.FileWatcherCertificateProvider> {
  await readTls(files); // fail now, naming the file, rather than at the first handshake
  const provider = new experimental.FileWatcherCertificateProvider({
    caCertificateFile: files.ca,
    certificateFile: files.cert,
    privateKeyFile: files.key,
    refreshIntervalMs: certificateRefreshMs,
  });
  let onCa: experimental.CaCertificateUpdateListener = () => undefined;
  let onIdentity: experimental.IdentityCertificateUpdateListener = () => undefined;
  await Promise.all([
    new Promise<void>((resolve) => {
      provider.addCaCertificateListener(
        (onCa = () => {
          resolve();
        }),
      );
    }),
    new Promise<void>((resolve) => {
      provider.addIdentityCertificateListener(
        (onIdentity = () => {
          resolve();
        }),
      );
    }),
  ]);
  // The provider keeps what it read; grpc-js's own listeners restart the refresh timer.
  provider.removeCaCertificateListener(onCa);
  provider.removeIdentityCertificateListener(onIdentity);
  return provider;
}

/** Server credentials that follow the files: new handshakes use the renewed certificate, open streams stay. */
export async function serverCredentials(files: TlsFiles): Promise<ServerCredentials> {
  const provider = await fileWatcher(files);
  return experimental.createCertificateProviderServerCredentials(provider, provider, true);
}

export async function clientCredentials(files: TlsFiles): Promise<ChannelCredentials> {
  const provider = await fileWatcher(files);
  return experimental.createCertificateProviderChannelCredentials(provider, provider);
}

/** Serials compare as numbers: upper-case hex without leading zeros (Node prints them so). */
export function normalizeSerial(serial: string): string {
  return serial
    .trim()
    .toUpperCase()
    .replace(/^0+(?=.)/, "");
}

/**
 * Serial numbers of revoked agent certificates, one per line (hex, as the
 * operator writes them into the revocation ConfigMap the process server
 * mounts). Re-read when the file changes; a missing file revokes nothing.
 */
export class RevocationList {
  private serials = new Set<string>();
  private seenMtimeMs = -1;

  constructor(private readonly path: string) {}

  isRevoked(serial: string | undefined): boolean {
    this.refresh();
    return serial !== undefined && this.serials.has(normalizeSerial(serial));
  }

  private refresh(): void {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.path).mtimeMs;
    } catch {
      this.serials = new Set();
      return;
    }
    if (mtimeMs === this.seenMtimeMs) return;
    this.seenMtimeMs = mtimeMs;
    const lines = readFileSync(this.path, "utf8").split("\n");
    const serials = lines.map((line) => line.trim().split(/\s+/)[0] ?? "").filter((serial) => serial !== "");
    this.serials = new Set(serials.map(normalizeSerial));
  }
}

export class PermissionError extends Error {
  readonly code = status.PERMISSION_DENIED;
}

/** The verified identity of the client certificate on a call. */
export function peerIdentity(call: ServerSurfaceCall): PeerIdentity {
  const commonName = call.getAuthContext().sslPeerCertificate?.subject.CN;
  if (typeof commonName !== "string" || commonName === "")
    throw new PermissionError("the client presented no certificate with a common name");
  const identity = parseCommonName(commonName);
  if (identity === undefined) throw new PermissionError(`certificate "${commonName}" carries no replicator role`);
  return identity;
}

/** Admits the roles given; agents are admitted per machine by requireAgentOf. */
export function requireRole(call: ServerSurfaceCall, allowed: readonly Exclude<ReplicatorRole, "agent">[]): void {
  const identity = peerIdentity(call);
  if (!(allowed as readonly ReplicatorRole[]).includes(identity.role))
    throw new PermissionError(
      `certificate "${commonNameOf(identity)}" may not call this service (allowed: ${allowed.join(", ")})`,
    );
}

/** Reading one machine's points: the operator, or the hydrator certificate of that machine only. */
export function requirePointReaderOf(call: ServerSurfaceCall, machineId: string): void {
  const identity = peerIdentity(call);
  if (identity.role === "operator") return;
  if (identity.role !== "hydrator")
    throw new PermissionError(
      `certificate "${commonNameOf(identity)}" may not read recovery points (allowed: operator, hydrator of the machine)`,
    );
  if (identity.machineId !== machineId)
    throw new PermissionError(
      `the hydrator of machine ${identity.machineId ?? ""} may not read machine ${machineId}: its certificate names its own machine only`,
    );
}

/** Admits only the agent of machineId, and only while its certificate is not revoked. */
export function requireAgentOf(call: ServerSurfaceCall, machineId: string, revoked?: RevocationList): void {
  const identity = peerIdentity(call);
  if (identity.role !== "agent")
    throw new PermissionError(
      `a ${identity.role} certificate may not push changes; only machine ${machineId}'s agent may`,
    );
  if (identity.machineId !== machineId)
    throw new PermissionError(
      `the agent of machine ${identity.machineId ?? ""} may not push for machine ${machineId}: its certificate names its own machine only`,
    );
  if (revoked?.isRevoked(call.getAuthContext().sslPeerCertificate?.serialNumber) === true)
    throw new PermissionError(`the certificate of machine ${machineId}'s agent was revoked (the machine was deleted)`);
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
