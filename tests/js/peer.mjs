// The matrix-js-sdk peer of the interop tests (tests/test_js_interop.py): one js-sdk call a run.
//
//   node peer.mjs <command> < {"baseUrl", "userId", "accessToken", ...the command's arguments}
//
// The arguments come on stdin, so that the access token never shows in a process listing. It
// prints one JSON line: {"ok": <what js-sdk returned>}, or {"error": {"errcode", "status",
// "message"}} when js-sdk threw a MatrixError (exit code 0 either way: an error answer is a
// result the test checks). Anything else is a crash (exit code 1, the stack on stderr).
//
// Each command is the call a JavaScript client author would make: a MatrixClient from
// createClient(), without sync, and js-sdk's own delayed-event methods.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { createClient, Direction, MatrixError } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("warn"); // its per-request debug lines would bury the answer

const commands = {
  // A device of its own on the account (password login), as a second program would have.
  login: (client, a) =>
    client.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: a.user },
      password: a.password,
      initial_device_display_name: "matrix-js-sdk interop peer",
    }),
  // Schedule: a message (stateKey absent), a state event, or a sticky message (stickyDurationMs).
  schedule: (client, a) => {
    const delay = { delay: a.delay };
    if (a.stateKey !== undefined) {
      return client._unstable_sendDelayedStateEvent(
        a.roomId,
        delay,
        a.type,
        a.content,
        a.stateKey,
      );
    }
    if (a.stickyDurationMs !== undefined) {
      return client._unstable_sendStickyDelayedEvent(
        a.roomId,
        a.stickyDurationMs,
        delay,
        null,
        a.type,
        a.content,
      );
    }
    return client._unstable_sendDelayedEvent(a.roomId, delay, null, a.type, a.content);
  },
  list: (client) => client._unstable_getDelayedEvents(),
  restart: (client, a) => client._unstable_restartScheduledDelayedEvent(a.delayId),
  cancel: (client, a) => client._unstable_cancelScheduledDelayedEvent(a.delayId),
  send: (client, a) => client._unstable_sendScheduledDelayedEvent(a.delayId),
  // The room's latest events, newest first, as this client reads them.
  messages: (client, a) => client.createMessagesRequest(a.roomId, null, 50, Direction.Backward),
  version: () => createRequire(import.meta.url)("matrix-js-sdk/package.json").version,
};

const [command] = process.argv.slice(2);
if (!(command in commands)) {
  process.stderr.write(`usage: node peer.mjs {${Object.keys(commands).join("|")}} < args.json\n`);
  process.exit(2);
}
const args = JSON.parse(readFileSync(0, "utf8"));
const client = createClient({
  baseUrl: args.baseUrl,
  userId: args.userId,
  accessToken: args.accessToken,
});
let answer;
try {
  answer = { ok: (await commands[command](client, args)) ?? null };
} catch (error) {
  if (!(error instanceof MatrixError)) throw error;
  answer = { error: { errcode: error.errcode, status: error.httpStatus, message: error.message } };
}
process.stdout.write(JSON.stringify(answer) + "\n");
process.exit(0);
