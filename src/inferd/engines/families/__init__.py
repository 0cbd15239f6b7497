"""Per-model-family handlers: the small quirks a chat model family needs.

By default a GGUF's own chat template formats the conversation. A family handler adjusts the
messages before that (a family without a system role gets the system text folded into the first
user turn) and adds stop strings its template does not declare. A family is picked from the
GGUF metadata, or named explicitly in a model's config (``family: gemma``).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from inferd.jsontypes import JsonValue


class Message(TypedDict):
    """A chat message as a chat template reads it: text content, and for a template that
    renders tools, a tool result's function name and call id."""

    role: str
    content: str
    name: NotRequired[str]
    tool_call_id: NotRequired[JsonValue]  # as the client sent it

# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class Family:
    """The default family: the GGUF's template, all roles as they are."""

    name = "default"
    system_role = True
    extra_stop: tuple[str, ...] = ()
    fallback_template = CHATML_TEMPLATE

    def prepare(self, messages: list[Message]) -> list[Message]:
        """Map OpenAI roles onto what the template understands."""
        out: list[Message] = []
        for message in messages:
            role = "system" if message["role"] == "developer" else message["role"]
            out.append({**message, "role": role})  # tool names and ids kept
        if self.system_role:
            return out
        return _fold_system(out)


class ChatML(Family):
    """ChatML models (SmolLM2, Qwen): ``<|im_end|>`` ends a turn even if not declared EOS."""

    name = "chatml"
    extra_stop = ("<|im_end|>",)


class Gemma(Family):
    """Gemma has no system role and ends turns with ``<end_of_turn>``."""

    name = "gemma"
    system_role = False
    extra_stop = ("<end_of_turn>",)


class Mistral(Family):
    """Early Mistral instruct templates refuse a system message."""

    name = "mistral"
    system_role = False


def _fold_system(messages: list[Message]) -> list[Message]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    if not system:
        return rest
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


FAMILIES: dict[str, type[Family]] = {f.name: f for f in (Family, ChatML, Gemma, Mistral)}


def detect(metadata: dict[str, str], override: str = "") -> Family:
    """Pick the handler for a model from its GGUF metadata (or an explicit name)."""
    if override:
        if override not in FAMILIES:
            raise ValueError(f"unknown model family {override!r}; known: {sorted(FAMILIES)}")
        return FAMILIES[override]()
    arch = metadata.get("general.architecture", "").lower()
    template = metadata.get("tokenizer.chat_template", "")
    if arch.startswith("gemma"):
        return Gemma()
    if "<|im_start|>" in template or not template:
        return ChatML()
    if "System role not supported" in template or "Conversation roles must alternate" in template:
        return Mistral()
    return Family()
