// Small helpers around @kubernetes/client-node shared by the node's loops.
import {
  ApiException,
  KubeConfig,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type KubernetesObject,
  type KubernetesListObject,
} from "@kubernetes/client-node";
import type { Logger } from "pino";

export const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

export const statusCode = (error: unknown): number | undefined =>
  error instanceof ApiException ? error.code : undefined;
export const isNotFound = (error: unknown) => statusCode(error) === 404;
export const isConflict = (error: unknown) => statusCode(error) === 409;
export const isAlreadyExists = (error: unknown) => statusCode(error) === 409;

/** A short description of an API error without its body (which may echo objects, secrets included). */
export function describeError(error: unknown): string {
  if (error instanceof ApiException) return `HTTP ${error.code}: ${apiMessage(error)}`;
  return error instanceof Error ? error.message : String(error);
}

function apiMessage(error: ApiException<unknown>): string {
  const body: unknown = error.body;
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      return parsed.message ?? "";
    } catch {
      return body.slice(0, 200);
    }
  }
  return "";
}

export interface InformerHandlers<T> {
  upsert(object: T): void;
  remove(object: T): void;
}

/**
 * List+watch with automatic restart: client-node's ListWatch stops on errors,
 * so it is started again after a pause, and a relist reconciles what was missed.
 */
export function startInformer<T extends KubernetesObject>(
  kubeConfig: KubeConfig,
  path: string,
  list: () => Promise<KubernetesListObject<T>>,
  handlers: InformerHandlers<T>,
  log: Logger,
  fieldSelector?: string,
): { stop(): Promise<void> } {
  const informer = new ListWatch<T>(path, new Watch(kubeConfig), list, false, undefined, fieldSelector);
  let stopped = false;
  informer.on("add", (object) => {
    handlers.upsert(object);
  });
  informer.on("update", (object) => {
    handlers.upsert(object);
  });
  informer.on("delete", (object) => {
    handlers.remove(object);
  });
  const restart = (error?: unknown) => {
    if (stopped) return;
    log.warn({ path, error: describeError(error) }, "watch failed; restarting");
    setTimeout(() => {
      if (!stopped) informer.start().catch(restart);
    }, 1000);
  };
  informer.on("error", restart);
  informer.start().catch(restart);
  return {
    async stop() {
      stopped = true;
      await informer.stop();
    },
  };
}
