"""The gateway's /metrics as Prometheus reads it: closes are counted under the code the server
closed with (a client answering a 4501 with 1000 does not hide it), a client's own close under
its code."""

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until


async def _closes(gw: Any) -> dict[str, float]:
    async with gw.http.session.get(gw.url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "switchboard_gateway_closes":
            return {s.labels["code"]: s.value for s in family.samples}
    return {}


async def test_closes_by_code_count_the_servers_code(gateway: Any) -> None:
    bad = await gateway.connect("mallory")
    await bad.ws.send_str("not json")
    assert await bad.closed() == 4501  # aiohttp's client answers the close frame with 1000
    polite = await gateway.connect("alice")
    await polite.ws.close(code=4000)

    async def counted() -> bool:
        return await _closes(gateway) == {"4501": 1.0, "4000": 1.0}

    await wait_until(counted, what="closes 4501 and 4000 counted once each")


async def _samples(gw: Any) -> dict[str, float]:
    async with gw.http.session.get(gw.url("/metrics")) as resp:
        text = await resp.text()
    return {
        sample.name
        + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_subscriptions_bytes_and_publication_ages(gateway: Any) -> None:
    clients = [await gateway.connect(f"u{i}") for i in range(3)]
    for client in clients:
        await client.ok("subscribe", channel="news")
    await clients[0].ok("subscribe", channel="other")
    before = await _samples(gateway)
    assert before["switchboard_gateway_subscriptions"] == 4
    status, _ = await gateway.api("POST", "/api/publish", json={"channel": "news", "data": "x"})
    assert status == 200
    for client in clients:
        await client.push()
    after = await _samples(gateway)
    count = "switchboard_gateway_publication_age_seconds_count"
    assert after[count] == before.get(count, 0) + 1
    assert after["switchboard_gateway_publication_age_seconds_bucket{le=+Inf}"] == after[count]
    assert 0 <= after["switchboard_gateway_publication_age_seconds_sum"] < 5
    sent = "switchboard_gateway_bytes_sent_total"
    assert after[sent] >= before[sent] + 3 * len('{"push":"pub","channel":"news"')
    assert after["switchboard_gateway_redis_reconnects_total"] == 0
    assert after["switchboard_gateway_redis_errors_total"] == 0
    for client in clients:
        await client.close()
