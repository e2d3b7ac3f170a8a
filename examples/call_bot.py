"""A call bot: a member of the room's MatrixRTC session (Element Call) while it lives.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/call_bot.py '!room:example.org' [--mode auto|sticky|legacy] [--delay 20]

The bot joins the room's call (``client.rtc_membership``) and answers ``!ping`` in the room
while it is a member. Call clients list it as a participant. A clean stop (Ctrl-C, SIGTERM)
leaves the call at once; if the process dies, the server sends its leave ``--delay`` seconds
later and the call clients drop it. ``--transport`` names the LiveKit focus service the bot
would publish on (media itself is not part of this example).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from nio import MatrixRoom, RoomMessageText, SyncResponse, WhoamiResponse

from nio_delayed import DelayedAsyncClient, stop_on_signals


async def main(room_id: str, mode: str, delay: float, transport: str | None) -> int:
    user_id, token = os.environ["MATRIX_USER_ID"], os.environ["MATRIX_ACCESS_TOKEN"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.access_token = token
    # The membership names the bot's device: the one its access token belongs to.
    me = await client.whoami()
    if not isinstance(me, WhoamiResponse) or not me.device_id:
        print(f"could not learn the token's device: {me}", file=sys.stderr)
        await client.close()
        return 1
    client.restore_login(user_id, me.device_id, token)
    focus = {"type": "livekit", "livekit_service_url": transport}
    transports = [] if transport is None else [focus]

    try:
        async with stop_on_signals() as shutdown:
            first = await client.sync(timeout=0, full_state=True)
            if not isinstance(first, SyncResponse):
                print(f"first sync failed: {first}", file=sys.stderr)
                return 1
            async with client.rtc_membership(
                room_id, mode=mode, delay=int(delay * 1000), transports=transports
            ) as call:

                async def on_message(room: MatrixRoom, event: RoomMessageText) -> None:
                    if event.sender != client.user_id and event.body.strip() == "!ping":
                        state = "in the call" if call.joined else "not in the call"
                        pong = {"msgtype": "m.notice", "body": f"pong ({state}, {call.mode.value})"}
                        await client.room_send(room.room_id, "m.room.message", pong)

                client.add_event_callback(on_message, RoomMessageText)  # new messages only
                print(
                    f"ready: in the call of {room_id} ({call.mode.value} mode, member "
                    f"{call.member_id}); out of it {delay:g} s after this process dies",
                    flush=True,
                )
                await client.sync_forever(timeout=30_000)
        how = shutdown.signal.name if shutdown.signal else "itself"
        print(f"stopped by {how}; left the call", flush=True)
        return 0
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("--mode", choices=["auto", "sticky", "legacy"], default="auto")
    parser.add_argument("--delay", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--transport", help="LiveKit focus service URL (optional)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.room_id, args.mode, args.delay, args.transport)))
