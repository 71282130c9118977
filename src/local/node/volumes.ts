// Pod volumes as files under DIR/node/pods/UID/volumes: emptyDir folders,
// configMap/secret/downwardAPI/projected (incl. service-account tokens)
// written as files, PVCs resolved to their node-local PersistentVolume.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type {
  V1Container,
  V1KeyToPath,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Volume,
  V1VolumeProjection,
} from "@kubernetes/client-node";
import { expandReferences, fieldPathValue, type ObjectLookup, type PodFacts } from "./env.js";
import { normalizeContainerPath, type BindMount } from "./filesystem.js";

/** The pod cannot start yet (FailedMount / waiting for a claim); retried later. */
export class VolumeNotReady extends Error {}

export interface PodVolume {
  name: string;
  /** Host path: a folder, or an image file for block volumes. */
  path: string;
  type: "dir" | "block";
  /** Files this node writes (configMap, secret, ...) and keeps current. */
  managed: boolean;
}

export interface VolumeSources extends ObjectLookup {
  claim(namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined>;
  persistentVolume(name: string): Promise<V1PersistentVolume | undefined>;
  serviceAccountToken(pod: V1Pod, audience: string | undefined, expirationSeconds: number): Promise<string>;
}

interface FileEntry {
  path: string;
  content: Buffer;
  mode: number;
}

/** Rejects item paths that could leave the volume folder. */
export function safeRelativePath(path: string, what: string): string {
  if (path === "" || path.startsWith("/") || path.split("/").includes("..")) {
    throw new VolumeNotReady(`${what} "${path}" must be a relative path without ".."`);
  }
  return path;
}

function keyedFiles(
  data: Record<string, Buffer>,
  items: V1KeyToPath[] | undefined,
  defaultMode: number,
  what: string,
  optional: boolean,
): FileEntry[] {
  if (items === undefined || items.length === 0) {
    return Object.entries(data).map(([key, content]) => ({
      path: safeRelativePath(key, what),
      content,
      mode: defaultMode,
    }));
  }
  return items.flatMap((item) => {
    const content = data[item.key];
    if (content === undefined) {
      if (optional) return [];
      throw new VolumeNotReady(`${what}: key "${item.key}" not found`);
    }
    return [{ path: safeRelativePath(item.path, what), content, mode: item.mode ?? defaultMode }];
  });
}

const utf8Values = (map: Record<string, string> | undefined) =>
  Object.fromEntries(Object.entries(map ?? {}).map(([k, v]) => [k, Buffer.from(v)]));
const base64Values = (map: Record<string, string> | undefined) =>
  Object.fromEntries(Object.entries(map ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64")]));

async function configMapFiles(
  namespace: string,
  ref: { name?: string; items?: V1KeyToPath[]; optional?: boolean },
  defaultMode: number,
  sources: VolumeSources,
): Promise<FileEntry[]> {
  const configMap = await sources.configMap(namespace, ref.name ?? "");
  if (configMap === undefined && ref.optional !== true) throw new VolumeNotReady(`configmap "${ref.name}" not found`);
  const data = { ...utf8Values(configMap?.data), ...base64Values(configMap?.binaryData) };
  return keyedFiles(data, ref.items, defaultMode, `configmap ${ref.name}`, ref.optional === true);
}

async function secretFiles(
  namespace: string,
  ref: { name?: string; secretName?: string; items?: V1KeyToPath[]; optional?: boolean },
  defaultMode: number,
  sources: VolumeSources,
): Promise<FileEntry[]> {
  const name = ref.secretName ?? ref.name ?? "";
  const secret = await sources.secret(namespace, name);
  if (secret === undefined && ref.optional !== true) throw new VolumeNotReady(`secret "${name}" not found`);
  return keyedFiles(base64Values(secret?.data), ref.items, defaultMode, `secret ${name}`, ref.optional === true);
}

function downwardFiles(
  items: { path: string; fieldRef?: { fieldPath: string }; mode?: number }[] | undefined,
  defaultMode: number,
  facts: PodFacts,
): FileEntry[] {
  return (items ?? []).map((item) => {
    if (item.fieldRef === undefined) throw new VolumeNotReady(`downwardAPI ${item.path}: only fieldRef is supported`);
    return {
      path: safeRelativePath(item.path, "downwardAPI item"),
      content: Buffer.from(fieldPathValue(facts, item.fieldRef.fieldPath)),
      mode: item.mode ?? defaultMode,
    };
  });
}

async function projectionFiles(
  source: V1VolumeProjection,
  defaultMode: number,
  facts: PodFacts,
  sources: VolumeSources,
): Promise<FileEntry[]> {
  const namespace = facts.pod.metadata?.namespace ?? "default";
  if (source.configMap !== undefined) return configMapFiles(namespace, source.configMap, defaultMode, sources);
  if (source.secret !== undefined) return secretFiles(namespace, source.secret, defaultMode, sources);
  if (source.downwardAPI !== undefined) return downwardFiles(source.downwardAPI.items, defaultMode, facts);
  if (source.serviceAccountToken !== undefined) {
    const { audience, expirationSeconds, path } = source.serviceAccountToken;
    const token = await sources.serviceAccountToken(facts.pod, audience, expirationSeconds ?? 3600);
    return [
      { path: safeRelativePath(path, "serviceAccountToken path"), content: Buffer.from(token), mode: defaultMode },
    ];
  }
  throw new VolumeNotReady(
    "projected volume: only configMap, secret, downwardAPI and serviceAccountToken sources are supported",
  );
}

async function managedFiles(
  volume: V1Volume,
  facts: PodFacts,
  sources: VolumeSources,
): Promise<FileEntry[] | undefined> {
  const namespace = facts.pod.metadata?.namespace ?? "default";
  if (volume.configMap !== undefined) {
    return configMapFiles(namespace, volume.configMap, volume.configMap.defaultMode ?? 0o644, sources);
  }
  if (volume.secret !== undefined)
    return secretFiles(namespace, volume.secret, volume.secret.defaultMode ?? 0o644, sources);
  if (volume.downwardAPI !== undefined) {
    return downwardFiles(volume.downwardAPI.items, volume.downwardAPI.defaultMode ?? 0o644, facts);
  }
  if (volume.projected !== undefined) {
    const mode = volume.projected.defaultMode ?? 0o644;
    const files: FileEntry[] = [];
    for (const source of volume.projected.sources ?? [])
      files.push(...(await projectionFiles(source, mode, facts, sources)));
    return files;
  }
  return undefined;
}

/** Writes the files atomically (rename) and removes ones no longer listed, so readers never see half a file. */
function syncFiles(dir: string, files: FileEntry[]): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const wanted = new Set(files.map((f) => join(dir, f.path)));
  for (const file of files) {
    const target = join(dir, file.path);
    mkdirSync(dirname(target), { recursive: true });
    const temp = `${target}.ksr-tmp`;
    writeFileSync(temp, file.content, { mode: file.mode });
    renameSync(temp, target);
  }
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isFile() && !wanted.has(path)) rmSync(path, { force: true });
  }
}

async function claimVolume(
  volume: V1Volume,
  claimName: string,
  pod: V1Pod,
  sources: VolumeSources,
): Promise<PodVolume> {
  const namespace = pod.metadata?.namespace ?? "default";
  const claim = await sources.claim(namespace, claimName);
  if (claim === undefined) throw new VolumeNotReady(`persistentvolumeclaim "${claimName}" not found`);
  const pvName = claim.spec?.volumeName;
  if (claim.status?.phase !== "Bound" || pvName === undefined || pvName === "") {
    throw new VolumeNotReady(`persistentvolumeclaim "${claimName}" is not bound yet`);
  }
  const pv = await sources.persistentVolume(pvName);
  const path = pv?.spec?.local?.path ?? pv?.spec?.hostPath?.path;
  if (path === undefined) {
    throw new VolumeNotReady(
      `persistentvolume "${pvName}" is neither local nor hostPath; the local node cannot attach it`,
    );
  }
  if (!existsSync(path)) throw new VolumeNotReady(`persistentvolume "${pvName}" data ${path} is missing`);
  return { name: volume.name, path, type: pv?.spec?.volumeMode === "Block" ? "block" : "dir", managed: false };
}

async function prepareVolume(
  volume: V1Volume,
  podDir: string,
  facts: PodFacts,
  sources: VolumeSources,
): Promise<PodVolume> {
  const path = join(podDir, "volumes", volume.name);
  const files = await managedFiles(volume, facts, sources);
  if (files !== undefined) {
    syncFiles(path, files);
    return { name: volume.name, path, type: "dir", managed: true };
  }
  if (volume.emptyDir !== undefined) {
    mkdirSync(path, { recursive: true, mode: 0o777 });
    return { name: volume.name, path, type: "dir", managed: false };
  }
  if (volume.persistentVolumeClaim !== undefined) {
    return claimVolume(volume, volume.persistentVolumeClaim.claimName, facts.pod, sources);
  }
  if (volume.ephemeral !== undefined) {
    return claimVolume(volume, `${facts.pod.metadata?.name}-${volume.name}`, facts.pod, sources);
  }
  if (volume.hostPath !== undefined) {
    if (volume.hostPath.type === "DirectoryOrCreate") mkdirSync(volume.hostPath.path, { recursive: true });
    if (!existsSync(volume.hostPath.path)) throw new VolumeNotReady(`hostPath ${volume.hostPath.path} does not exist`);
    return { name: volume.name, path: volume.hostPath.path, type: "dir", managed: false };
  }
  throw new VolumeNotReady(
    `volume "${volume.name}": the local node supports emptyDir, configMap, secret, downwardAPI, projected, persistentVolumeClaim, ephemeral and hostPath`,
  );
}

/** Materialises (or refreshes) every volume of the pod; throws VolumeNotReady while something is missing. */
export async function preparePodVolumes(
  podDir: string,
  facts: PodFacts,
  sources: VolumeSources,
): Promise<Map<string, PodVolume>> {
  const volumes = new Map<string, PodVolume>();
  for (const volume of facts.pod.spec?.volumes ?? [])
    volumes.set(volume.name, await prepareVolume(volume, podDir, facts, sources));
  return volumes;
}

/** The container's volumeMounts and volumeDevices as bind mounts (subPath resolved, never outside the volume). */
export function containerMounts(
  container: V1Container,
  volumes: ReadonlyMap<string, PodVolume>,
  env: ReadonlyMap<string, string>,
): BindMount[] {
  const mounts = (container.volumeMounts ?? []).map((mount): BindMount => {
    const volume = volumes.get(mount.name);
    if (volume === undefined) throw new VolumeNotReady(`volumeMount "${mount.name}" names no volume of the pod`);
    if (volume.type === "block")
      throw new VolumeNotReady(`volume "${mount.name}" is a Block volume: use volumeDevices`);
    const subPath = mount.subPathExpr !== undefined ? expandReferences(mount.subPathExpr, env) : mount.subPath;
    let source = volume.path;
    if (subPath !== undefined && subPath !== "") {
      source = join(volume.path, safeRelativePath(subPath, "subPath"));
      if (!existsSync(source)) mkdirSync(source, { recursive: true });
    }
    const isFile = volume.managed && subPath !== undefined && subPath !== "" && !isDirectory(source);
    return {
      source,
      target: normalizeContainerPath(mount.mountPath, "mountPath"),
      readOnly: mount.readOnly === true || volume.managed,
      type: isFile ? "file" : "dir",
    };
  });
  const devices = (container.volumeDevices ?? []).map((device): BindMount => {
    const volume = volumes.get(device.name);
    if (volume?.type !== "block")
      throw new VolumeNotReady(`volumeDevice "${device.name}" needs a Block persistentVolumeClaim`);
    return {
      source: volume.path,
      target: normalizeContainerPath(device.devicePath, "devicePath"),
      readOnly: false,
      type: "file",
    };
  });
  return [...mounts, ...devices];
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
