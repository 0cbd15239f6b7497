"""Sentence embeddings in this process (all-MiniLM-L6-v2 and other sentence-transformers models).

The forward pass is Hugging Face ``transformers`` on PyTorch (CPU build); pooling and
normalisation follow the model folder's own sentence-transformers config (``modules.json``,
``1_Pooling/config.json``), so any model saved in that layout works.

Input given as token ids is refused unless the model's ``token_id_input`` setting is on: ids
are read as the model's own tokenizer's, and a client that tokenized for another model (the
default ``OpenAIEmbeddings`` of LangChain sends tiktoken ids) would get vectors of other words,
with no error to notice.
"""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inferd.engines.base import Engine, ModelInfo
from inferd.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from inferd.schemas.answers import Embedding, EmbeddingList, Usage
from inferd.schemas.openai import EmbeddingRequest, Prompt
from inferd.settings import ModelSpec


class SentenceEmbeddingEngine(Engine):
    """``/v1/embeddings`` from a sentence-transformers model folder."""

    kind = "embeddings"
    capabilities = frozenset({"embeddings"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.path = Path(spec.path)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{spec.name}")
        self._model: Any = None
        self._tokenizer: Any = None
        self.max_seq_length = 512
        self.pooling = "mean"
        self.normalize = False
        self.dimensions = 0

    def _read_config(self) -> None:
        bert = self.path / "sentence_bert_config.json"
        if bert.exists():
            self.max_seq_length = int(json.loads(bert.read_text()).get("max_seq_length", 512))
        pooling = self.path / "1_Pooling" / "config.json"
        if pooling.exists():
            cfg = json.loads(pooling.read_text())
            self.pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
        modules = self.path / "modules.json"
        if modules.exists():
            kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
            self.normalize = any(k.endswith("Normalize") for k in kinds)

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        if self.spec.n_threads:
            torch.set_num_threads(self.spec.n_threads)
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        model.eval()
        self._model = model
        self.dimensions = int(model.config.hidden_size)

    async def start(self) -> None:
        self._read_config()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._load)

    async def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._model = None

    def ready(self) -> bool:
        return self._model is not None

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities,
                         context_length=self.max_seq_length)

    def _text(self, given: Prompt, index: int) -> str:
        """An input as text: token ids (of this model's tokenizer) are decoded."""
        if isinstance(given, str):
            return given
        if any(i >= self._tokenizer.vocab_size for i in given):
            raise InvalidRequest(f"input[{index}] holds a token id that is not a token of the "
                                 f"model '{self.name}'.", param="input")
        text: str = self._tokenizer.decode(given, skip_special_tokens=True)
        return text

    def _encode(self, given: list[Prompt]) -> tuple[list[list[float]], int]:
        import torch

        texts = [self._text(g, i) for i, g in enumerate(given)]
        batch = self._tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
        mask = batch["attention_mask"]
        lengths = mask.sum(dim=1).tolist()
        for index, length in enumerate(lengths):
            if length > self.max_seq_length:
                raise ContextLengthExceeded(
                    f"This model's maximum input length is {self.max_seq_length} tokens; "
                    f"input[{index}] is {length} tokens long.", param="input")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.tolist(), int(sum(lengths))

    def check_token_ids(self, inputs: list[Prompt]) -> None:
        """A 400 for token-id input unless the model is set to read it."""
        if self.spec.token_id_input:
            return
        index = next((i for i, given in enumerate(inputs) if not isinstance(given, str)), None)
        if index is None:
            return
        raise InvalidRequest(
            f"The model '{self.name}' takes text: input[{index}] is a list of token ids, "
            "which would be read as ids of this model's own tokenizer (ids from another "
            "tokenizer, such as tiktoken's, give the vectors of other words). Send the texts "
            "as strings; with LangChain's OpenAIEmbeddings, set "
            "check_embedding_ctx_length=False. (An operator can let this model read ids of "
            "its own tokenizer with its setting token_id_input: true.)",
            param="input", code="token_ids_not_accepted")

    async def embed(self, request: EmbeddingRequest) -> EmbeddingList:
        if request.dimensions is not None and request.dimensions != self.dimensions:
            raise UnsupportedParameter(
                f"The model '{self.name}' produces {self.dimensions} dimensions only.",
                param="dimensions")
        texts = request.inputs()
        self.check_token_ids(texts)
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(
            self._thread, self._encode, texts)
        data = []
        for index, vector in enumerate(vectors):
            value: list[float] | str = vector
            if request.encoding_format == "base64":
                import numpy as np

                value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            data.append(Embedding(object="embedding", index=index, embedding=value))
        return EmbeddingList(object="list", data=data, model=request.model,
                             usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
