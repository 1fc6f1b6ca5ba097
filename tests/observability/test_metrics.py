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
