// A small JSON client for the Kubernetes API. @kubernetes/client-node supplies
// the credentials (KubeConfig.applyToHTTPSOptions); requests and watch streams
// are plain node:https so that every failure surfaces as an error we handle:
// client-node's Watch can end without telling anyone (see DESIGN.md §6).
import { Agent, request, type RequestOptions } from "node:https";
import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { KubeConfig } from "@kubernetes/client-node";
import { apiVersionOf, type KubeObject, type ResourceType } from "./objects.js";
import { pods } from "./workload-resources.js";
import { runExec, type ExecResult, type ExecTarget } from "./pod-exec.js";

/** A failed API call, carrying the HTTP status and the Status reason the server gave. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export const isNotFound = (error: unknown): boolean => error instanceof ApiError && error.statusCode === 404;
export const isConflict = (error: unknown): boolean => error instanceof ApiError && error.statusCode === 409;
export const isGone = (error: unknown): boolean => error instanceof ApiError && error.statusCode === 410;
export const isAlreadyExists = (error: unknown): boolean =>
  error instanceof ApiError && error.statusCode === 409 && error.reason === "AlreadyExists";

export type PatchKind = "merge" | "json" | "strategic";
const patchContentTypes: Record<PatchKind, string> = {
  merge: "application/merge-patch+json",
  json: "application/json-patch+json",
  strategic: "application/strategic-merge-patch+json",
};

export interface ListOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

export interface WatchOptions extends ListOptions {
  resourceVersion: string;
  allowBookmarks: boolean;
  /** The server ends the watch after this long; a new one then continues from the last resourceVersion. */
  timeoutSeconds: number;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";

export interface WatchEvent {
  type: WatchEventType;
  object: KubeObject & { code?: number; reason?: string; message?: string };
}

/** How a watch stream ended: the server closed it, or an error (HTTP, network, parse, abort). */
export type WatchEnd = { kind: "closed" } | { kind: "error"; error: Error };

export interface WatchHandle {
  /** Stops the stream; `ended` then resolves with an error of kind "aborted". */
  abort(reason: string): void;
  readonly ended: Promise<WatchEnd>;
}

export interface KubeClientOptions {
  /** Deadline for every non-watch request, so that a dead connection cannot block a caller forever. */
  requestTimeoutMs?: number;
  /** Upper bound of concurrent connections for non-watch requests. */
  maxSockets?: number;
}

interface RawRequest {
  method: string;
  path: string;
  query?: Record<string, string | readonly string[] | undefined>;
  body?: unknown;
  contentType?: string;
}

const listPageSize = 500;

/** A request refused or cut because the client's fence signal aborted (shutdown, or the lease lost). */
export class FencedError extends Error {
  constructor(what: string) {
    super(`${what}: not sent, this process no longer acts (shut down or lost leadership)`);
    this.name = "FencedError";
  }
}

export const isFenced = (error: unknown): boolean => error instanceof FencedError;

/** The connection pool, shared between a client and its fenced views. */
interface Transport {
  agent: Agent | undefined;
}

export class KubeClient {
  private readonly server: URL;
  private readonly requestTimeoutMs: number;
  private readonly maxSockets: number;
  private readonly transport: Transport;
  private readonly fence: AbortSignal | undefined;

  constructor(
    readonly kubeConfig: KubeConfig,
    private readonly options: KubeClientOptions = {},
    shared?: { transport: Transport; fence: AbortSignal },
  ) {
    const cluster = kubeConfig.getCurrentCluster();
    if (cluster === null) throw new Error("the kubeconfig has no current cluster; set current-context");
    if (cluster.proxyUrl !== undefined) throw new Error("kubeconfig clusters with proxy-url are not supported");
    this.server = new URL(cluster.server);
    if (this.server.protocol !== "https:") throw new Error(`the API server must use https, got ${cluster.server}`);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.maxSockets = options.maxSockets ?? 32;
    this.transport = shared?.transport ?? { agent: undefined };
    this.fence = shared?.fence;
  }

  /**
   * The same client (same connections) refusing every request once signal has
   * aborted and cutting those in flight: controllers get this view, so that a
   * process that lost its lease cannot write, whatever its reconcilers do.
   */
  fenced(signal: AbortSignal): KubeClient {
    return new KubeClient(this.kubeConfig, this.options, { transport: this.transport, fence: signal });
  }

  async get<T extends KubeObject>(type: ResourceType<T>, name: string, namespace?: string): Promise<T | undefined> {
    try {
      return await this.json<T>({ method: "GET", path: resourcePath(type, namespace, name) });
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Lists every page; the result's resourceVersion is the one to watch from. */
  async list<T extends KubeObject>(type: ResourceType<T>, options: ListOptions = {}): Promise<ListResult<T>> {
    const items: T[] = [];
    let continueToken: string | undefined;
    for (;;) {
      const page = await this.json<{ items: T[]; metadata: { resourceVersion: string; continue?: string } }>({
        method: "GET",
        path: resourcePath(type, options.namespace),
        query: {
          labelSelector: options.labelSelector,
          fieldSelector: options.fieldSelector,
          limit: String(listPageSize),
          continue: continueToken,
        },
      });
      // List items omit apiVersion and kind; restore them so objects look the same from list, get and watch.
      for (const item of page.items) items.push({ ...item, apiVersion: apiVersionOf(type), kind: type.kind });
      continueToken = page.metadata.continue;
      if (continueToken === undefined || continueToken === "") {
        return { items, resourceVersion: page.metadata.resourceVersion };
      }
    }
  }

  /** dryRun: the server validates and admits the object without storing it (kubectl --dry-run=server). */
  create<T extends KubeObject>(type: ResourceType<T>, object: T, options: { dryRun?: boolean } = {}): Promise<T> {
    return this.json<T>({
      method: "POST",
      path: resourcePath(type, object.metadata.namespace),
      body: object,
      query: { dryRun: options.dryRun === true ? "All" : undefined },
    });
  }

  /** PUT: fails with a conflict when metadata.resourceVersion is stale. */
  replace<T extends KubeObject>(type: ResourceType<T>, object: T): Promise<T> {
    const { name, namespace } = object.metadata;
    return this.json<T>({ method: "PUT", path: resourcePath(type, namespace, name), body: object });
  }

  replaceStatus<T extends KubeObject>(type: ResourceType<T>, object: T): Promise<T> {
    const { name, namespace } = object.metadata;
    return this.json<T>({ method: "PUT", path: resourcePath(type, namespace, name) + "/status", body: object });
  }

  patch<T extends KubeObject>(
    type: ResourceType<T>,
    target: { name: string; namespace?: string },
    patch: unknown,
    kind: PatchKind,
    subresource?: "status",
  ): Promise<T> {
    const path = resourcePath(type, target.namespace, target.name) + (subresource === undefined ? "" : "/status");
    return this.json<T>({ method: "PATCH", path, body: patch, contentType: patchContentTypes[kind] });
  }

  /**
   * Server-side apply: the server merges the fields this manager sets and owns
   * them; force takes over fields another manager set (an install re-run after
   * a manual edit). Creates the object when it does not exist.
   */
  apply<T extends KubeObject>(
    type: ResourceType<T>,
    object: T,
    options: { fieldManager: string; force?: boolean },
  ): Promise<T> {
    const { name, namespace } = object.metadata;
    return this.json<T>({
      method: "PATCH",
      path: resourcePath(type, namespace, name),
      query: { fieldManager: options.fieldManager, force: options.force === true ? "true" : undefined },
      body: { ...object, apiVersion: apiVersionOf(type), kind: type.kind },
      contentType: "application/apply-patch+yaml",
    });
  }

  /** Returns false when the object was already gone. */
  async delete(
    type: ResourceType<KubeObject>,
    target: { name: string; namespace?: string },
    options: { propagationPolicy?: "Foreground" | "Background" | "Orphan"; uid?: string } = {},
  ): Promise<boolean> {
    const body = {
      kind: "DeleteOptions",
      apiVersion: "v1",
      propagationPolicy: options.propagationPolicy,
      preconditions: options.uid === undefined ? undefined : { uid: options.uid },
    };
    try {
      await this.json({ method: "DELETE", path: resourcePath(type, target.namespace, target.name), body });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  /**
   * Opens a watch stream. Every event is handed to onEvent in order; the handle's
   * `ended` promise always settles, whatever way the stream stops.
   */
  async watch(
    type: ResourceType<KubeObject>,
    options: WatchOptions,
    onEvent: (event: WatchEvent) => void,
  ): Promise<WatchHandle> {
    const query = {
      watch: "1",
      resourceVersion: options.resourceVersion,
      allowWatchBookmarks: options.allowBookmarks ? "true" : undefined,
      timeoutSeconds: String(options.timeoutSeconds),
      labelSelector: options.labelSelector,
      fieldSelector: options.fieldSelector,
    };
    // A watch gets its own agent and therefore its own connection: aborting it must not disturb other requests.
    const requestOptions = await this.requestOptions({
      method: "GET",
      path: resourcePath(type, options.namespace),
      query,
    });
    return startWatch(requestOptions, onEvent, this.requestTimeoutMs);
  }

  /**
   * Runs a command in a pod's container through pods/exec (what kubectl exec does) and resolves
   * with its exit code and the tails of its output; rejects with ExecError when it could not run
   * or did not end within timeoutMs. Fenced like every other request.
   */
  async exec(target: ExecTarget, command: readonly string[], options: { timeoutMs: number }): Promise<ExecResult> {
    const what = `exec in ${target.namespace}/${target.pod} (container ${target.container})`;
    if (this.fenceDown()) throw new FencedError(what);
    const requestOptions = await this.requestOptions({
      method: "GET",
      path: `${resourcePath(pods, target.namespace, target.pod)}/exec`,
      query: { container: target.container, command, stdout: "true", stderr: "true" },
    });
    if (this.fenceDown()) throw new FencedError(what);
    return runExec(requestOptions, options.timeoutMs, this.fence);
  }

  private async json<T>(raw: RawRequest): Promise<T> {
    const what = `${raw.method} ${raw.path}`;
    if (this.fenceDown()) throw new FencedError(what);
    const payload = raw.body === undefined ? undefined : JSON.stringify(raw.body);
    const options = await this.requestOptions(raw, payload);
    if (this.fenceDown()) throw new FencedError(what);
    options.agent = this.sharedAgent(options);
    options.signal = this.fence;
    const { statusCode, body } = await sendRequest(options, payload, this.requestTimeoutMs).catch((error: unknown) => {
      throw this.fenceDown() ? new FencedError(what) : error;
    });
    if (statusCode < 200 || statusCode >= 300) throw apiErrorFrom(statusCode, body, `${raw.method} ${raw.path}`);
    return JSON.parse(body) as T;
  }

  private fenceDown(): boolean {
    return this.fence?.aborted === true;
  }

  private async requestOptions(raw: RawRequest, payload?: string): Promise<RequestOptions> {
    const options: RequestOptions = {};
    // Applied per request: token files and exec credentials can change while the operator runs.
    await this.kubeConfig.applyToHTTPSOptions(options);
    const url = new URL(this.server.href.replace(/\/$/, "") + raw.path);
    for (const [key, value] of Object.entries(raw.query ?? {}))
      if (typeof value === "string") url.searchParams.set(key, value);
      else for (const item of value ?? []) url.searchParams.append(key, item);
    options.method = raw.method;
    options.hostname = url.hostname;
    options.port = url.port;
    options.path = url.pathname + url.search;
    options.headers = {
      // applyToHTTPSOptions only ever sets a header object (Authorization and the like).
      ...(options.headers as OutgoingHttpHeaders | undefined),
      accept: "application/json",
      // An explicit length: Node frames a DELETE body neither chunked nor with a length by itself, and
      // the API server would then read that body as the next request on the connection.
      ...(payload === undefined
        ? {}
        : { "content-type": raw.contentType ?? "application/json", "content-length": Buffer.byteLength(payload) }),
    };
    return options;
  }

  private sharedAgent(options: RequestOptions): Agent {
    this.transport.agent ??= new Agent({
      keepAlive: true,
      maxSockets: this.maxSockets,
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      rejectUnauthorized: options.rejectUnauthorized,
      servername: options.servername,
    });
    return this.transport.agent;
  }

  /** Closes idle keep-alive connections (so a stopped process can exit promptly). */
  close(): void {
    this.transport.agent?.destroy();
    this.transport.agent = undefined;
  }
}

export function resourcePath(type: ResourceType<KubeObject>, namespace?: string, name?: string): string {
  const base = type.group === "" ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  const scope = type.namespaced && namespace !== undefined ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  const object = name === undefined ? "" : `/${encodeURIComponent(name)}`;
  return `${base}${scope}/${type.plural}${object}`;
}

function apiErrorFrom(statusCode: number, body: string, what: string): ApiError {
  let reason = "";
  let message = body.slice(0, 500);
  try {
    const status = JSON.parse(body) as { reason?: string; message?: string };
    reason = status.reason ?? "";
    message = status.message ?? message;
  } catch {
    // Not a Status object (a proxy or a dying server answered); the raw text is the best message we have.
  }
  return new ApiError(statusCode, reason, `${what}: ${statusCode} ${reason} ${message}`.trim());
}

function sendRequest(
  options: RequestOptions,
  payload: string | undefined,
  timeoutMs: number,
): Promise<{ statusCode: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from the API server within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * Until the response headers arrive, the request timeout applies; afterwards a
 * quiet stream is normal and the informer's stall watchdog judges it.
 */
function startWatch(
  options: RequestOptions,
  onEvent: (event: WatchEvent) => void,
  responseTimeoutMs: number,
): Promise<WatchHandle> {
  return new Promise((resolveHandle, rejectHandle) => {
    let settle: (end: WatchEnd) => void = () => undefined;
    const ended = new Promise<WatchEnd>((resolve) => (settle = resolve));
    let finished = false;
    const finish = (end: WatchEnd) => {
      if (finished) return;
      finished = true;
      req.destroy();
      settle(end);
    };
    const req = request(options, (res) => {
      req.setTimeout(0);
      if (res.statusCode !== 200) {
        readAll(res, (body) => {
          rejectHandle(apiErrorFrom(res.statusCode ?? 0, body, `watch ${options.path ?? ""}`));
          finish({ kind: "closed" });
        });
        return;
      }
      resolveHandle({
        abort: (reason) => {
          finish({ kind: "error", error: new Error(`aborted: ${reason}`) });
        },
        ended,
      });
      streamEvents(res, onEvent, finish, () => !finished);
    });
    req.setTimeout(responseTimeoutMs, () =>
      req.destroy(new Error(`no answer to the watch request within ${responseTimeoutMs} ms`)),
    );
    req.on("error", (error) => {
      rejectHandle(error);
      finish({ kind: "error", error });
    });
    req.end();
  });
}

function readAll(res: IncomingMessage, done: (body: string) => void): void {
  const chunks: Buffer[] = [];
  res.on("data", (chunk: Buffer) => chunks.push(chunk));
  res.on("end", () => {
    done(Buffer.concat(chunks).toString("utf8"));
  });
  res.on("error", () => {
    done(Buffer.concat(chunks).toString("utf8"));
  });
}

/** Splits the response into JSON lines; a line that does not parse ends the watch with an error. */
function streamEvents(
  res: IncomingMessage,
  onEvent: (event: WatchEvent) => void,
  finish: (end: WatchEnd) => void,
  active: () => boolean,
) {
  let pending = "";
  res.setEncoding("utf8");
  res.on("data", (chunk: string) => {
    pending += chunk;
    let newline = pending.indexOf("\n");
    // Events already buffered behind an abort are dropped: the consumer has moved on.
    while (newline >= 0 && active()) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.trim() !== "") {
        let event: WatchEvent;
        try {
          event = JSON.parse(line) as WatchEvent;
        } catch {
          finish({ kind: "error", error: new Error(`unparseable watch event: ${line.slice(0, 200)}`) });
          return;
        }
        onEvent(event);
      }
      newline = pending.indexOf("\n");
    }
  });
  res.on("end", () => {
    finish({ kind: "closed" });
  });
  res.on("error", (error) => {
    finish({ kind: "error", error });
  });
  res.on("close", () => {
    finish(res.complete ? { kind: "closed" } : { kind: "error", error: new Error("watch connection closed early") });
  });
}
