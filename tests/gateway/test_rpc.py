"""The native `rpc` op, on the gateway's side of the contract (services/common/rpc.py)."""

import asyncio
import json

from services.common.rpc import RpcCall


async def test_a_call_nobody_answers_times_out_and_other_commands_go_on(start_gateway, redis):
    gw = await start_gateway(GATEWAY_RPC_TIMEOUT_S="0.5")
    client = await gw.connect("alice")
    await client.ws.send_str(json.dumps({"id": "r1", "op": "rpc", "method": "slow", "data": [1]}))
    # The connection is not blocked behind the pending call.
    assert (await client.call("ping"))["result"] == {}
    reply = await client.call("ping", timeout_s=5.0)
    assert reply["result"] == {}
    [(_, fields)] = await redis.xrange("sb:rpc")
    call = RpcCall.decode(fields[b"c"])
    assert (call.method, call.data, call.user, call.room) == ("slow", [1], "alice", None)
    assert call.claims["sub"] == "alice"
    assert call.reply.startswith("sb:rpc:reply:")
    timed_out = await asyncio.wait_for(client.orphans.get(), 5.0)  # replies by id, later
    assert timed_out["id"] == "r1"
    assert timed_out["error"]["code"] == 114
    await client.close()


async def test_bad_calls_get_precise_errors(start_gateway):
    gw = await start_gateway(GATEWAY_RPC_TIMEOUT_S="5", GATEWAY_MAX_RPC_IN_FLIGHT="1")
    client = await gw.connect("alice")
    assert (await client.call("rpc", data={}))["error"]["code"] == 107  # no method
    assert (await client.call("rpc", method="x" * 200))["error"]["code"] == 107
    assert (await client.call("rpc", method="m", room=3))["error"]["code"] == 107
    await client.ws.send_str(json.dumps({"id": "held", "op": "rpc", "method": "m"}))
    assert (await client.call("rpc", method="m"))["error"]["code"] == 106  # one in flight
    await client.close()
