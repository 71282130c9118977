// src/runtime: the project's small controller-runtime. Controllers import from here.
export * from "./objects.js";
export * from "./kube-client.js";
export * from "./resources.js";
export * from "./informer.js";
export * from "./cache.js";
export * from "./workqueue.js";
export * from "./controller.js";
export * from "./manager.js";
export * from "./leader-election.js";
export * from "./conditions.js";
export * from "./status.js";
export * from "./events.js";
export * from "./owners.js";
export * from "./metrics.js";
export * from "./logging.js";
export * from "./clock.js";
export * from "./backoff.js";
