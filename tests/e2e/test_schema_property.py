"""Property test: no JSON schema crashes ``inferd serve`` (``tests/schema_fuzzing.py``).

Adversarial schemas through every endpoint that takes one, then generated schemas (hundreds
in all), against one ``inferd serve`` child process with the real bundled model: the process
stays alive, and every answer is a 200 or a 4xx in the API's own error shape, never a 5xx.
``bench/schemas.py --examples N`` is the longer run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import schema_fuzzing
from tests.helpers import InferdProcess

pytestmark = pytest.mark.slow

EXAMPLES = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with InferdProcess(Path(tmp_path_factory.mktemp("schemas"))) as process:
        yield process


@pytest.mark.timeout(900)
def test_no_schema_crashes_the_server(server: InferdProcess) -> None:
    """About 170 requests: each adversarial schema through two endpoints (every endpoint
    gets some; tests/e2e/test_schema_bounds.py sends the main shapes through all), then
    the generated ones."""
    assert server.proc is not None
    with httpx.Client(base_url=server.url, timeout=120) as client:
        try:
            tally = schema_fuzzing.run(client, server.proc, EXAMPLES, endpoints_each=2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nserver log:\n{server.log()}") from exc
    assert tally.failures == [] and tally.crashes == 0, server.log()
    # the adversarial shapes were refused by the bounds, and ordinary schemas answered
    assert sum(tally.refused.values()) >= len(schema_fuzzing.ADVERSARIAL)
    assert tally.answered > 0
    assert server.proc.poll() is None
