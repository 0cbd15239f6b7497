"""GGUF models run in this process by llama.cpp, many requests batched on one context.

- ``engine``: requests in (OpenAI shapes), text pieces out; the ``LlamaCppEngine`` class.
- ``batch``: one thread per model driving ``llama_decode`` over every running sequence.
- ``seats``: which free sequence a request takes (the prompt cache's rules).
- ``sampling``: a llama.cpp sampler chain per sequence, logprobs and stop strings.
"""

from inferd.engines.llamacpp.engine import LlamaCppEngine

__all__ = ["LlamaCppEngine"]
