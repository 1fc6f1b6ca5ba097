"""A replica merges a busy room's updates from the state it last wrote, without reading it:
whatever changed the room behind its back (another replica, the reaper, an operator) must
still be seen, because the script checks it and has the room read again."""

from services.common.redis import Keys
from services.rooms.keys import store_key


async def test_an_update_merges_with_a_change_made_behind_the_replicas_back(gateway, rooms, redis):
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r", state={})
    await alice.ok("room.update", room="r", patch={"a": 1})
    await alice.ok("room.update", room="r", patch={"a": 2})  # the replica remembers {"a": 2}
    key = Keys().room("r")
    # What another replica's update would have done: a new version with another state.
    version = await redis.hincrby(key, "version", 1)
    await redis.hset(key, "state", '{"a":2,"other":true}')

    updated = await alice.ok("room.update", room="r", patch={"a": 3})
    assert updated["version"] == version + 1
    assert updated["state"] == {"a": 3, "other": True}
    assert (await alice.ok("room.get", room="r"))["state"] == {"a": 3, "other": True}
    # Operators see it: one read because the room was not known yet, one because it changed.
    async with rooms.http.session.get(rooms.http.make_url("/metrics")) as resp:
        text = await resp.text()
    assert 'switchboard_rooms_state_reads_total{reason="not_remembered"} 1.0' in text
    assert 'switchboard_rooms_state_reads_total{reason="changed"} 1.0' in text
    await alice.close()


async def test_a_member_removed_behind_the_replicas_back_is_refused(gateway, rooms, redis):
    alice, bob = await gateway.connect("alice"), await gateway.connect("bob")
    bob_conn = (await bob.ok("connect"))["client"]
    await alice.ok("room.join", room="r", state={})
    joined = await bob.ok("room.join", room="r")
    await bob.ok("room.update", room="r", patch={"b": 1})  # the replica remembers the room
    # What another replica's reaper or an operator could have done meanwhile.
    await redis.zrem(Keys().room_members("r"), bob_conn)

    refused = await bob.call("room.update", room="r", patch={"b": 2})
    assert refused["error"]["code"] == 110
    after = await alice.ok("room.get", room="r")
    assert (after["version"], after["state"]) == (joined["version"] + 1, {"b": 1})
    await alice.close()
    await bob.close()


async def test_the_remembered_states_stay_within_their_bound(gateway, rooms, monkeypatch):
    import services.rooms.store as store_module

    monkeypatch.setattr(store_module, "KNOWN_CHARS", 100)
    alice = await gateway.connect("alice")
    for n in range(5):
        await alice.ok("room.join", room=f"r{n}", state={})
        await alice.ok("room.update", room=f"r{n}", patch={"text": "x" * 30})
    store = rooms.app[store_key]
    assert store._known_chars <= 100
    assert len(store._known) == 2  # the last rooms written, each {"text":"x..."} of 41 chars
    for n in range(5):  # forgotten or not, every room reads back right
        updated = await alice.ok("room.update", room=f"r{n}", patch={"n": n})
        assert updated["state"] == {"text": "x" * 30, "n": n}
    await alice.close()


async def test_a_room_made_again_at_the_same_version_is_not_taken_for_the_old_one(
    gateway, rooms, redis
):
    alice = await gateway.connect("alice")
    await alice.ok("room.join", room="r", state={})
    updated = await alice.ok("room.update", room="r", patch={"old": True})  # remembered
    key = Keys().room("r")
    # The room expired (or was deleted elsewhere) and was made again by someone else, who took
    # it to the very version remembered here, with another state.
    await redis.delete(key)
    await redis.hset(
        key,
        mapping={"state": '{"new":true}', "version": updated["version"], "created": "1"},
    )

    after = await alice.ok("room.update", room="r", patch={"mine": 1})
    assert after["state"] == {"new": True, "mine": 1}
    assert after["version"] == updated["version"] + 1
    await alice.close()
