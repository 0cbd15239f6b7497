"""One of the queued generate system's own workers, from its real package (protollm-api): its
``LLMWrap`` with its fake model. Run by .venv-protollm's Python (scripts/protollm.sh):

    python tests/protollm_llmwrap.py QUEUE REDIS_PORT [hold]

``hold``: the model never returns (a worker stuck mid-task, to be killed).
"""

import sys
import threading

from protollm_api.worker.config import Config
from protollm_api.worker.models.fake_models import FakeModel
from protollm_api.worker.services.broker import LLMWrap


class HeldModel(FakeModel):
    """The fake model, stuck in its task until the process is killed."""

    def __call__(self, transaction):  # type: ignore[no-untyped-def]
        threading.Event().wait()


def main() -> None:
    queue, redis_port = sys.argv[1], int(sys.argv[2])
    model = HeldModel() if sys.argv[3:] == ["hold"] else FakeModel()
    config = Config(redis_host="127.0.0.1", redis_port=redis_port, rabbit_host="127.0.0.1",
                    rabbit_port=5672, rabbit_login="guest", rabbit_password="guest",
                    queue_name=queue)
    LLMWrap(llm_model=model, config=config).start_connection()
    print("consuming", flush=True)


if __name__ == "__main__":
    main()
