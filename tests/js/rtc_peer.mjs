// matrix-js-sdk's own MatrixRTC session as a second member of a room's call, the real-client
// peer of tests/test_rtc_synapse.py.
//
//   node rtc_peer.mjs < {"baseUrl", "accessToken", "userId", "deviceId", "roomId", "mode"}
//
// It syncs, joins the room's call itself (MatrixRTCSession.joinRoomSession; sticky events when
// mode is "sticky", state events when "legacy"), and prints one JSON line whenever the session's
// member list changes, as js-sdk computes it:
//   {"event": "members", "at": <ms since epoch>, "members": [{"user_id", "device_id",
//    "member_id", "kind": "rtc" (sticky m.rtc.member) | "session" (legacy state)}]}
// plus {"event": "ready"} once it has asked to join. SIGTERM leaves the session and exits.
// PEER_LOG=debug in the environment shows js-sdk's own log (on stdout, beside the JSON lines).

import { readFileSync } from "node:fs";

import { ClientEvent, createClient } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { MatrixRTCSessionEvent } from "matrix-js-sdk/lib/matrixrtc/index.js";

const args = JSON.parse(readFileSync(0, "utf8"));
logger.setLevel(process.env.PEER_LOG ?? "warn"); // debug shows its every request

const print = (line) => process.stdout.write(JSON.stringify({ at: Date.now(), ...line }) + "\n");

const client = createClient({
  baseUrl: args.baseUrl,
  accessToken: args.accessToken,
  userId: args.userId,
  deviceId: args.deviceId,
});

const prepared = new Promise((resolve) => {
  client.on(ClientEvent.Sync, (state) => {
    if (state === "PREPARED") resolve();
  });
});
await client.startClient({ initialSyncLimit: 20 });
await prepared;

const room = client.getRoom(args.roomId);
if (room === null) {
  print({ event: "error", message: `not in ${args.roomId}` });
  process.exit(1);
}
const session = client.matrixRTC.getRoomSession(room);

const members = () =>
  session.memberships.map((m) => ({
    user_id: m.userId,
    device_id: m.deviceId,
    member_id: m.memberId,
    // A legacy state membership has a scope; an m.rtc.member one has none.
    kind: m.scope === undefined ? "rtc" : "session",
  }));

session.on(MatrixRTCSessionEvent.MembershipsChanged, () => print({ event: "members", members: members() }));
await session.initialMembershipCalculated;

// Its sticky membership names the transport it publishes on (none is contacted here).
const transport = { type: "livekit", livekit_service_url: "https://sfu.invalid" };
session.joinRoomSession([], transport, {
  unstableSendStickyEvents: args.mode === "sticky",
  manageMediaKeys: false,
});
print({ event: "ready", members: members() });

process.on("SIGTERM", async () => {
  await session.leaveRoomSession(5000);
  client.stopClient();
  process.exit(0);
});
