// Every step action, by the action recorded in status.steps.
import type { StepAction } from "../../../api/types.js";
import { cleanupStep, commitStep, finalSyncStep, recoverStep, shutDownSourceStep, stopStep } from "./builtin.js";
import { recordingFailover, reverseStep } from "./reprotect.js";
import { scriptStep } from "./script.js";
import { trafficStep } from "./traffic.js";
import type { StepExecutor } from "./types.js";
import { manualStep, waitStep } from "./wait.js";
import { webhookStep } from "./webhook.js";

export type { StepContext, StepExecutor } from "./types.js";

const unsupported: StepExecutor = {
  execute: () => Promise.resolve({ state: "Failed", message: "this step is not run by the controller" }),
};

export const stepExecutors: Record<StepAction, StepExecutor> = {
  Validate: unsupported,
  ShutDownSource: shutDownSourceStep,
  FinalSync: finalSyncStep,
  Recover: recoverStep,
  Stop: stopStep,
  Script: scriptStep,
  Manual: manualStep,
  Wait: waitStep,
  Traffic: trafficStep,
  Webhook: webhookStep,
  Commit: recordingFailover(commitStep),
  Cleanup: cleanupStep,
  Reverse: reverseStep,
};
