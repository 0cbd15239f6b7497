"""Mock upstreams for the gateway benchmark.

* ``nginx_config``: Debian's nginx-light answering ``POST /v1/chat/completions`` with a fixed
  OpenAI chat completion, and ``POST /sse/v1/chat/completions`` with a fixed SSE stream (several
  chunks, a usage chunk, ``[DONE]``) -- as fast as an upstream can be, so that what is measured
  is the proxy in front of it.
* ``python bench/upstream_mock.py paced PORT``: a raw-asyncio SSE upstream that sends its chunks
  ``INTERVAL`` seconds apart, each carrying the ``CLOCK_MONOTONIC`` time at which it was written
  (``t=<ns>`` in the delta content). A client that reads the same clock can tell how long each
  chunk took to reach it through a proxy: this is the "no buffering" check.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

COMPLETION = {
    "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
}


def _chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "mock", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}


def _events(events: list[dict[str, object]]) -> bytes:
    return b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n"
                    for e in events)


def sse_tail(completion_tokens: int) -> bytes:
    """The finish chunk, the usage chunk and ``[DONE]``."""
    usage = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "mock", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": completion_tokens,
                       "total_tokens": 9 + completion_tokens}}
    return _events([_chunk({}, "stop"), usage]) + b"data: [DONE]\n\n"


def sse_body(words: list[str]) -> bytes:
    head = _events([_chunk({"role": "assistant", "content": ""})])
    return head + _events([_chunk({"content": w}) for w in words]) + sse_tail(len(words))


def _nginx_string(data: bytes) -> str:
    text = data.decode().replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{text}'"


def nginx_config(workdir: Path, port: int) -> Path:
    """Write an nginx config (one worker, keep-alive, no logs) and return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    completion = json.dumps(COMPLETION, separators=(",", ":")).encode()
    stream = sse_body(["Hello", " from", " the", " mock", "."])
    conf = f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 {_nginx_string(completion)};
    }}
    location = /sse/v1/chat/completions {{
      default_type text/event-stream;
      add_header Cache-Control no-cache;
      return 200 {_nginx_string(stream)};
    }}
    location = /v1/models {{
      default_type application/json;
      return 200 '{{"object":"list","data":[{{"id":"mock","object":"model"}}]}}';
    }}
    location / {{
      default_type application/json;
      return 200 '{{"status":"ok"}}';
    }}
  }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(conf)
    return path


# -- paced SSE upstream -----------------------------------------------------------------------

CHUNKS = 10
INTERVAL = 0.02


async def _paced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"POST"):
                body = b'{"object":"list","data":[]}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(CHUNKS):
                if i:
                    await asyncio.sleep(INTERVAL)
                event = _events([_chunk({"content": f"t={time.monotonic_ns()} "})])
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            tail = sse_tail(CHUNKS)
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_paced(port: int) -> None:
    server = await asyncio.start_server(_paced, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "paced":
        asyncio.run(serve_paced(int(sys.argv[2])))
    else:
        sys.exit("usage: upstream_mock.py paced PORT")
