"""Anthropic's Messages API, translated onto the chat-completions core (pure logic, no I/O).

``translate`` maps a Messages request onto a ``ChatCompletionRequest`` and a chat completion
back onto a Message; ``events`` turns a stream of chat chunks into Anthropic's event sequence.
Because the translation happens before routing, every engine (local, ``http``, ``triton``)
serves ``/v1/messages``, with the same limits and metering as a chat request.
"""
