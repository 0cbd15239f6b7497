"""The reference: a bare aiohttp proxy (parse JSON, forward with a pooled session, parse, answer).

``python bench/bare_proxy.py PORT UPSTREAM_BASE`` -- no auth, no limits, no metering: the least
any Python proxy has to do. Same event loop (uvloop) as inferd, so the comparison is fair.
"""

import json
import sys

import aiohttp
import uvloop
from aiohttp import web


async def chat(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    session: aiohttp.ClientSession = request.app["session"]
    async with session.post(request.app["upstream"] + "/chat/completions", json=body) as up:
        answer = json.loads(await up.read())
        return web.json_response(answer, status=up.status)


async def on_startup(app: web.Application) -> None:
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def on_cleanup(app: web.Application) -> None:
    await app["session"].close()


if __name__ == "__main__":
    app = web.Application()
    app["upstream"] = sys.argv[2].rstrip("/")
    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None, loop=uvloop.new_event_loop())
