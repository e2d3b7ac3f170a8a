"""Self-destructing messages: a message, and a delayed redaction of it scheduled on the server.

    export MATRIX_HOMESERVER=... MATRIX_USER_ID=... MATRIX_ACCESS_TOKEN=...
    python examples/self_destruct.py '!room:example.org' 'this will vanish' --after 60

The redaction lives on the server: it happens even if this program (or its machine) is gone
by then. What works where: a delayed event carries only content, and a redaction names its
target in the content (``{"redacts": ...}``) only from room version 11 on. Synapse 1.142.1 and
1.163.2 both accept a delayed ``m.room.redaction`` in any room, but in room versions 1-10 they
fail to send it when the delay runs out (the failure is only in the server's log). So this
example refuses rooms older than version 11. Synapse 1.163 creates version 12 rooms by default;
1.142 creates version 10 rooms unless asked for 11.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import timedelta

from nio import RoomGetStateEventResponse, RoomSendResponse

from nio_delayed import DelayedAsyncClient, RoomSendDelayedResponse


async def room_version(client: DelayedAsyncClient, room_id: str) -> str:
    create = await client.room_get_state_event(room_id, "m.room.create")
    if not isinstance(create, RoomGetStateEventResponse):
        raise SystemExit(f"cannot read the room's version: {create}")
    return str(create.content.get("room_version", "1"))


async def main(room_id: str, text: str, after: float) -> None:
    user_id = os.environ["MATRIX_USER_ID"]
    client = DelayedAsyncClient(os.environ["MATRIX_HOMESERVER"], user_id)
    client.restore_login(user_id, "self-destruct", os.environ["MATRIX_ACCESS_TOKEN"])
    try:
        version = await room_version(client, room_id)
        if not version.isdigit() or int(version) < 11:
            raise SystemExit(
                f"{room_id} is room version {version}: a delayed redaction needs version 11 or "
                "later (the server would accept it, then fail to send it)"
            )
        sent = await client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text}
        )
        if not isinstance(sent, RoomSendResponse):
            raise SystemExit(f"could not send the message: {sent}")
        redaction = await client.room_send_delayed(
            room_id, "m.room.redaction", {"redacts": sent.event_id}, timedelta(seconds=after)
        )
        if not isinstance(redaction, RoomSendDelayedResponse):
            raise SystemExit(
                f"sent {sent.event_id}, but could not schedule its redaction: {redaction}"
            )
        print(f"sent {sent.event_id}; the server redacts it in {after:g} s", flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("room_id")
    parser.add_argument("text")
    parser.add_argument("--after", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args()
    asyncio.run(main(args.room_id, args.text, args.after))
