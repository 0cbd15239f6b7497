"""The queued generate system's backend, from its real package (protollm-api): its services
publish a task and wait for its result in Redis, as its ``/generate`` and ``/chat_completion``
do. Run by .venv-protollm's Python (scripts/protollm.sh):

    python tests/protollm_backend.py QUEUE REDIS_PORT generate|chat JOB_ID TEXT [TIMEOUT]

Prints the service's answer (``{"content": ...}``) as JSON.
"""

import asyncio
import sys

from protollm_api.backend.bll.services.chat_complition import ChatCompletionService
from protollm_api.backend.config import Config
from protollm_api.backend.models.job_context_models import (
    ChatCompletionModel,
    PromptMeta,
    PromptModel,
)
from protollm_api.object_interface import RabbitMQQueue, RedisResultStorage


async def main() -> None:
    queue, redis_port, kind, job_id, text = sys.argv[1:6]
    timeout = int(sys.argv[6]) if len(sys.argv) > 6 else 120
    config = Config(redis_host="127.0.0.1", redis_port=int(redis_port), rabbit_host="127.0.0.1",
                    rabbit_port=5672, rabbit_login="guest", rabbit_password="guest",
                    queue_name=queue, timeout=timeout)
    service = ChatCompletionService(
        RedisResultStorage(redis_host=config.redis_host, redis_port=config.redis_port),
        RabbitMQQueue(host=config.rabbit_host, port=config.rabbit_port,
                      username=config.rabbit_login, password=config.rabbit_password),
        config)
    meta = PromptMeta(temperature=0.0, tokens_limit=8)
    if kind == "generate":
        answer = await service.get_generate(
            PromptModel(job_id=job_id, meta=meta, content=text), queue)
    else:
        answer = await service.get_chat_completion(
            ChatCompletionModel(job_id=job_id, meta=meta,
                                messages=[{"role": "user", "content": text}]), queue)
    print(answer.model_dump_json(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
