// The JavaScript peer of the cost benchmark: matrix-js-sdk restarting delayed events from node.
//
//   node restart.mjs < {"baseUrl", "accessToken", "userId", "delayIds", "phases", "interval",
//                       "warmup", "seconds"}
//
// What a JavaScript bot author would write: a MatrixClient from createClient() (no sync) and one
// timer per switch calling js-sdk's own restart, switch k restarting at phases[k] seconds into
// each interval (the schedule every variant of the cost benchmark shares). It measures this
// process's CPU time (process.cpuUsage(): user + system) over `seconds` after `warmup` seconds,
// and prints one JSON line:
// {"restarts", "errors", "cpu_us_per_restart", "sdk_version", "node_version"}.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

import { createClient, UpdateDelayedEventAction } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const args = JSON.parse(readFileSync(0, "utf8"));
logger.setLevel("warn"); // its per-request debug lines are not what is measured

const client = createClient({
  baseUrl: args.baseUrl,
  accessToken: args.accessToken,
  userId: args.userId,
});

// The restart call of the installed version (43.0.0 has the first; older ones only the second,
// which 43.0.0 keeps as deprecated).
const restart =
  typeof client._unstable_restartScheduledDelayedEvent === "function"
    ? (id) => client._unstable_restartScheduledDelayedEvent(id)
    : (id) => client._unstable_updateDelayedEvent(id, UpdateDelayedEventAction.Restart);

let restarts = 0;
let errors = 0;
const intervalMs = args.interval * 1000;
const started = performance.now();
// Node's timers count whole milliseconds (and keep one list per distinct delay).
const wait = (due) => Math.max(1, Math.round(due - performance.now()));
const timers = args.delayIds.map((id, k) => {
  // Each restart at its phase plus a whole number of intervals. (A plain setInterval restarts
  // the period from when its callback ran: switches woken together stay together, and clump.)
  let due = started + args.phases[k] * 1000;
  const keep = () => {
    restart(id).then(
      () => void restarts++,
      () => void errors++,
    );
    due += intervalMs;
    timers[k] = setTimeout(keep, wait(due));
  };
  return setTimeout(keep, wait(due));
});

await sleep(args.warmup * 1000);
const cpuBefore = process.cpuUsage();
const countBefore = restarts;
await sleep(args.seconds * 1000);
const cpu = process.cpuUsage(cpuBefore);
const counted = restarts - countBefore;
for (const timer of timers) clearTimeout(timer);

const version = createRequire(import.meta.url)("matrix-js-sdk/package.json").version;
process.stdout.write(
  JSON.stringify({
    restarts: counted,
    errors,
    cpu_us_per_restart: (cpu.user + cpu.system) / counted,
    sdk_version: version,
    node_version: process.version,
  }) + "\n",
);
process.exit(0);
