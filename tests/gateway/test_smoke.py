async def test_publish_reaches_subscriber(gateway):
    client = await gateway.connect("alice")
    result = await client.ok("subscribe", channel="news")
    assert result["recovered"] is False
    status, body = await gateway.api(
        "POST", "/api/publish", json={"channel": "news", "data": {"t": 1}}
    )
    assert status == 200, body
    push = await client.push()
    assert push == {"push": "pub", "channel": "news", "offset": body["offset"], "data": {"t": 1}}
    await client.close()
