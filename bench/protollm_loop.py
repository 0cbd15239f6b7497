"""The queued generate system's backend (its real package, protollm-api) sending chats one
after another and waiting for each answer, as its ``/chat_completion`` does; run by
.venv-protollm's Python (scripts/protollm.sh) for bench/queued_generate.py:

    .venv-protollm/bin/python bench/protollm_loop.py QUEUE REDIS_PORT REQUESTS

Prints ``{"seconds": [...], "lost": N}``: the seconds of each answered request, and how many
answers the backend missed: it reads the answer as soon as it sees the ``completed`` status,
which its own worker writes before the answer; and it reads the status once before it
subscribes to its announcements, so a task finished in between is waited for until the timeout
(10 s here).
"""

import asyncio
import json
import sys
import time
import uuid

from protollm_api.backend.bll.services.chat_complition import ChatCompletionService
from protollm_api.backend.config import Config
from protollm_api.backend.exeption import JobNotFoundError
from protollm_api.backend.models.job_context_models import ChatCompletionModel, PromptMeta
from protollm_api.object_interface import RabbitMQQueue, RedisResultStorage


async def main() -> None:
    queue, redis_port, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Config(redis_host="127.0.0.1", redis_port=redis_port, rabbit_host="127.0.0.1",
                    rabbit_port=5672, rabbit_login="guest", rabbit_password="guest",
                    queue_name=queue, timeout=10)
    service = ChatCompletionService(
        RedisResultStorage(redis_host="127.0.0.1", redis_port=redis_port),
        RabbitMQQueue(host="127.0.0.1", port=5672, username="guest", password="guest"), config)
    seconds, lost = [], 0
    for i in range(requests):
        prompt = ChatCompletionModel(job_id=uuid.uuid4().hex, meta=PromptMeta(tokens_limit=8),
                                     messages=[{"role": "user", "content": f"hello {i}"}])
        started = time.perf_counter()
        try:
            answer = await service.get_chat_completion(prompt, queue)
        except JobNotFoundError:
            lost += 1
            continue
        if answer.content.startswith("Job "):  # its text for a timeout or an error
            lost += 1
            continue
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "lost": lost}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
