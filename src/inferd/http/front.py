"""``HotPathApp``: the application as it serves, with its hot requests run past the framework.

For a request that ``hot`` maps to a fast path's answer (``POST /v1/chat/completions``, a job
submission: ``inferd.app.hot_answer``) it runs the application's own middleware (request guard,
auth: ``user_middleware``), built once, around that answer, without the framework's error,
telemetry and body-limit wrappers, routing or dependency injection; everything else (and the
lifespan) goes through the framework as usual. The answer reports every error in the OpenAI
shape itself; the framework's route for the same operation answers through the same function
(``inferd.http.fast.Answered``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from inferd.http.fast import Answer, hot_app


class HotPathApp(FastAPI):
    """A FastAPI application whose requests ``hot`` names an answer for skip the framework."""

    def __init__(self, hot: Callable[[Scope], Answer | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot
        self._stacks: dict[Answer, ASGIApp] = {}

    def _stack(self, answer: Answer) -> ASGIApp:
        """``answer`` inside the app's middleware, built on first use (when the middleware is
        complete, as the framework builds its own stack)."""
        stack: ASGIApp = hot_app(answer)
        for cls, args, kwargs in reversed(self.user_middleware):
            stack = cls(stack, *args, **kwargs)
        self._stacks[answer] = stack
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = self.hot(scope)
            if answer is not None:
                scope["app"] = self  # what the framework sets: answers find services there
                stack = self._stacks.get(answer) or self._stack(answer)
                await stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
