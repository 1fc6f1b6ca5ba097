"""The demo page in a real browser (Playwright driving Debian's chromium) against the local
cluster: two visitors on two gateway replicas share a review room (people, playhead, play/pause,
annotations), the events feed shows server and client publications, the camera view shows a
frame pushed to the streams service; a visitor whose gateway restarts reconnects and draws on.
A screenshot is kept as an artifact."""

import shutil
from collections.abc import Callable
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, Page, WebSocket, expect

from deploy.local import LocalCluster
from deploy.local.haproxy import STICKY_COOKIE
from tests.helpers import wait_until

ROOM = "review-e2e"
CHANNEL = "demo:feed"  # the namespace the demo mode provides (client publish)
CAMERA = ("demo", "cam")  # frames API label and key: demo tokens read labels named demo*
FRAME = (160, 90)  # the pushed JPEG's size, which the camera view must show

expect.set_options(timeout=10_000)

# A JPEG made by the browser itself (no image library in the test's dependencies).
MAKE_JPEG = """async ([width, height]) => {
  const canvas = new OffscreenCanvas(width, height);
  const g = canvas.getContext('2d');
  g.fillStyle = '#0a84ff';
  g.fillRect(0, 0, width, height);
  g.fillStyle = '#ffffff';
  g.fillRect(width / 4, height / 4, width / 2, height / 2);
  const blob = await canvas.convertToBlob({ type: 'image/jpeg', quality: 0.9 });
  return Array.from(new Uint8Array(await blob.arrayBuffer()));
}"""

PIXEL = """([x, y]) => {
  const canvas = document.getElementById('canvas');
  return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data);
}"""


class Visitor:
    """One browser context pinned to one gateway replica by haproxy's stickiness cookie."""

    def __init__(self, page: Page, gateway: str) -> None:
        self.page = page
        self.gateway = gateway
        self.errors: list[str] = []
        self.sockets: list[str] = []  # URLs of the gateway WebSockets the page opened
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        if socket.url.split("?")[0].endswith("/ws"):
            self.sockets.append(socket.url)

    async def draw(self, x0: float, x1: float, y: float) -> None:
        """A straight stroke from x0 to x1 at height y (fractions of the picture)."""
        box = await self.page.locator("#canvas").bounding_box()
        assert box is not None
        await self.page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y)
        await self.page.mouse.down()
        await self.page.mouse.move(
            box["x"] + box["width"] * x1, box["y"] + box["height"] * y, steps=12
        )
        await self.page.mouse.up()


async def visit(browser: Browser, cluster: LocalCluster, gateway: str, name: str) -> Visitor:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_cookies([{"name": STICKY_COOKIE, "value": gateway, "url": cluster.url}])
    visitor = Visitor(await context.new_page(), gateway)
    page = visitor.page
    await page.goto(f"{cluster.url}/demo?room={ROOM}&camera={CAMERA[0]}/{CAMERA[1]}")
    await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#state")).to_have_text("connected")
    await expect(page.locator("#join")).to_be_hidden()
    await expect(page.locator("#gateway")).to_have_text(f"served by {gateway}")
    return visitor


async def connections(cluster: LocalCluster, replica: str) -> float:
    """The replica's own count of open WebSockets (its /metrics, not through haproxy)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.replicas[replica].url("/metrics")) as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("switchboard_gateway_connections "):
            return float(line.split()[1])
    raise AssertionError(f"{replica} reports no connection gauge")


async def test_two_visitors_on_two_gateways(
    demo_cluster: LocalCluster,
    browser: Browser,
    make_token: Callable[..., str],
    tmp_path: Path,
    artifacts: Path,
) -> None:
    cluster = demo_cluster
    ann = await visit(browser, cluster, "gateway-1", "Ann")
    bob = await visit(browser, cluster, "gateway-2", "Bob")

    # Each page's WebSocket is held by the replica its cookie names.
    for replica in ("gateway-1", "gateway-2"):

        async def holds_one(replica: str = replica) -> bool:
            return await connections(cluster, replica) == 1.0

        await wait_until(holds_one, what=f"one socket on {replica}")

    # Both see both people.
    for visitor in (ann, bob):
        people = visitor.page.locator("#people li")
        await expect(people).to_have_count(2)
        await expect(people.filter(has_text="Ann")).to_have_count(1)
        await expect(people.filter(has_text="Bob")).to_have_count(1)

    # Ann moves the playhead; Bob's follows.
    slider = ann.page.locator("#position")
    box = await slider.bounding_box()
    assert box is not None
    await ann.page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    moved = await slider.input_value()
    assert 60 < int(moved) < 120, moved
    await expect(bob.page.locator("#position")).to_have_value(moved)

    # Ann plays: Bob's playhead runs; Ann pauses: both stop at the same position.
    await ann.page.get_by_role("button", name="Play").click()
    await expect(bob.page.locator("#play")).to_have_attribute("data-playing", "true")
    await expect(bob.page.locator("#play")).to_have_text("Pause")
    for visitor in (ann, bob):
        await expect(visitor.page.locator("#position")).not_to_have_value(moved)
    await ann.page.get_by_role("button", name="Pause").click()
    await expect(bob.page.locator("#play")).to_have_attribute("data-playing", "false")
    await expect(ann.page.locator("#play")).to_have_attribute("data-playing", "false")
    stopped = await ann.page.locator("#position").input_value()
    assert int(stopped) > int(moved)
    await expect(bob.page.locator("#position")).to_have_value(stopped)

    # Ann draws a horizontal line across the middle; Bob's canvas shows it.
    await ann.draw(0.2, 0.8, 0.5)
    await expect(bob.page.locator("#canvas")).to_have_attribute("data-strokes", "1")
    on_line = await bob.page.evaluate(PIXEL, [320, 180])  # the canvas is 640x360
    off_line = await bob.page.evaluate(PIXEL, [320, 40])
    assert on_line[3] == 255 and on_line[0] > 200 and on_line[1] < 120, on_line  # Ann's red ink
    assert off_line[3] == 0, off_line

    # A backend publishes through the server API; Bob publishes from the page.
    token = make_token("backend", scope="publish")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{cluster.url}/api/publish",
            json={"channel": CHANNEL, "data": {"name": "ci", "text": "build 42 passed"}},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    for visitor in (ann, bob):
        await expect(visitor.page.locator("#events")).to_contain_text("build 42 passed")
    await bob.page.get_by_placeholder("say something").fill("looks good at 1:30")
    await bob.page.get_by_role("button", name="Publish").click()
    await expect(ann.page.locator("#events li").first).to_contain_text("Boblooks good at 1:30")

    # A camera uploads one frame to the streams service (frames API); both camera views show it.
    jpeg = bytes(await ann.page.evaluate(MAKE_JPEG, list(FRAME)))
    await push_frame(cluster, make_token("camera"), jpeg)
    for visitor in (ann, bob):
        frames = visitor.page.locator("#frames")
        await expect(frames).to_have_js_property("naturalWidth", FRAME[0])
        await expect(visitor.page.locator("#camera-status")).to_have_text(
            f"live: {FRAME[0]}x{FRAME[1]}"
        )

    # gateway-1 restarts (SIGTERM, close 1012): Ann's page reconnects through haproxy, joins the
    # room again and draws on; Bob sees the new stroke next to the first.
    await cluster.restart("gateway-1")
    await wait_until(lambda: len(ann.sockets) == 2, timeout_s=10, what="Ann's page reconnected")
    await expect(ann.page.locator("#state")).to_have_text("connected")
    await ann.draw(0.2, 0.8, 0.25)
    for visitor in (ann, bob):
        await expect(visitor.page.locator("#canvas")).to_have_attribute("data-strokes", "2")
        await expect(visitor.page.locator("#people li")).to_have_count(2)
    assert len(bob.sockets) == 1  # Bob's gateway did not move

    screenshot = tmp_path / "demo.png"
    await bob.page.screenshot(path=screenshot, full_page=True)
    shutil.copyfile(screenshot, artifacts / "demo.png")
    assert ann.errors == [] and bob.errors == []


async def push_frame(cluster: LocalCluster, token: str, jpeg: bytes) -> None:
    form = aiohttp.FormData({"label": CAMERA[0], "key": CAMERA[1]})
    form.add_field("file", jpeg, filename="frame.jpg", content_type="image/jpeg")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{cluster.url}/frames",
            data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
