#!/usr/bin/env node
// kubectl plugin entry point: `kubectl dr ...` runs this with the plugin arguments.
import { kubectlDrMain } from "../dist/src/cli/kubectl-dr.js";

await kubectlDrMain(process.argv);
