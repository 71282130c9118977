#!/usr/bin/env node
// Entry point kept as plain JavaScript so `npx ksr` works from the built tree.
import { main } from "../dist/src/cli/ksr.js";

await main(process.argv);
