"""Tool calling on the in-process engine: the request's tools, the prompt, the grammar.

The calls travel in the Hermes format most tool-tuned open models (Qwen, Hermes, SmolLM3) use::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

When the GGUF's chat template renders ``tools`` itself it gets them; otherwise the tools and the
format are described in the system prompt. Either way a GBNF grammar built from the functions'
JSON schemas constrains the answer to well-formed calls (or, for ``tool_choice: auto``, a plain
answer instead), so even a small model returns calls the SDKs can parse. ``toolparse`` turns the
text back into ``tool_calls``.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from inferd.engines import jsongrammar
from inferd.engines.families import Message
from inferd.errors import InvalidRequest, UnsupportedParameter
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.openai import ChatCompletionRequest, ChatMessage, NonTextContent

TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"
# A small model asked for parallel calls may repeat itself until max_tokens; this bounds it.
MAX_PARALLEL_CALLS = 8
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Function(TypedDict):
    """A function the model may call, as a request's ``tools`` offer it."""

    name: str
    description: JsonValue  # as the client sent it ("" when left out)
    parameters: JsonObject  # the JSON schema of its arguments


class Tool(TypedDict):
    """A function as the OpenAI API (and a chat template that renders tools) writes it."""

    type: Literal["function"]
    function: Function


@dataclass
class ToolPlan:
    """What the model may answer: which functions, and whether a call is required."""

    functions: list[Function]
    required: bool
    parallel: bool

    def openai_tools(self) -> list[Tool]:
        return [{"type": "function", "function": f} for f in self.functions]


def _functions(tools: list[JsonObject]) -> list[Function]:
    out: list[Function] = []
    for index, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(f"Invalid value for 'tools[{index}]': only tools of type "
                                 "'function' with a 'function' object are supported.",
                                 param=f"tools[{index}]", code="invalid_value")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(f"Invalid 'tools[{index}].function.name': a name of 1 to 64 "
                                 "letters, digits, '_' or '-' is required.",
                                 param=f"tools[{index}].function.name", code="invalid_value")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"Invalid 'tools[{index}].function.parameters': a JSON schema "
                                 "object is required.",
                                 param=f"tools[{index}].function.parameters",
                                 code="invalid_value")
        out.append({"name": name, "description": function.get("description") or "",
                    "parameters": parameters})
    return out


def plan(request: ChatCompletionRequest) -> ToolPlan | None:
    """The tool plan of a request, or ``None`` when the answer is plain text."""
    choice = request.tool_choice
    if not request.tools:
        if choice not in (None, "none"):
            raise InvalidRequest("'tool_choice' is only allowed when 'tools' are specified.",
                                 param="tool_choice", code="invalid_value")
        return None
    functions = _functions(request.tools)
    if choice == "none":
        return None
    parallel = (request.model_extra or {}).get("parallel_tool_calls") is not False
    if choice in (None, "auto", "required"):
        return ToolPlan(functions, required=choice == "required", parallel=parallel)
    name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or name is None:
        raise InvalidRequest("Invalid value for 'tool_choice': expected 'none', 'auto', "
                             "'required' or {\"type\": \"function\", \"function\": "
                             "{\"name\": ...}}.", param="tool_choice", code="invalid_value")
    chosen = [f for f in functions if f["name"] == name]
    if not chosen:
        raise InvalidRequest(f"Invalid value for 'tool_choice': no function named '{name}' "
                             "in 'tools'.", param="tool_choice", code="invalid_value")
    return ToolPlan(chosen, required=True, parallel=False)


# -- the prompt ---------------------------------------------------------------------------

def template_renders_tools(template: str) -> bool:
    """Whether a chat template uses the ``tools`` variable (Jinja templates of tool models)."""
    return re.search(r"\btools\b", template) is not None


def call_text(name: str, arguments: Any) -> str:
    """One call in the format the model reads and writes."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # else kept as the string the client sent
            arguments = json.loads(arguments) if arguments.strip() else {}
    return f"{TOOL_OPEN}\n" + json.dumps({"name": name, "arguments": arguments}) + \
        f"\n{TOOL_CLOSE}"


def _assistant_text(message: ChatMessage, text: str) -> str:
    calls = (message.model_extra or {}).get("tool_calls") or []
    parts = [text] if text else []
    for call in calls:
        function = call.get("function") or {} if isinstance(call, dict) else {}
        parts.append(call_text(str(function.get("name", "")), function.get("arguments", {})))
    return "\n".join(parts)


def unreadable(model: str, message: int, exc: NonTextContent) -> UnsupportedParameter:
    """The 400 for a content part a text-only model cannot read, naming the part."""
    where = f"messages[{message}].content[{exc.part}]"
    if exc.kind == "image_url":
        what = ("does not accept images: it has no vision projector. Send images to a model "
                "served by a vision-capable replica")
    else:
        what = f"does not accept content parts of type '{exc.kind}'"
    return UnsupportedParameter(f"The model '{model}' reads text only and {what} ({where}).",
                                param=where)


def render_messages(messages: list[ChatMessage], native: bool, model: str) -> list[Message]:
    """Chat messages as role/content pairs, tool calls and tool results written out.

    A template that knows tools gets ``tool`` messages as they are; any other template gets
    a tool result as a user turn in ``<tool_response>`` tags, which every template renders.
    Only text is read: any other content part is a 400 naming ``model`` and the part.
    """
    names: dict[str, str] = {}
    out: list[Message] = []
    for index, message in enumerate(messages):
        try:
            text = message.text()
        except NonTextContent as exc:
            raise unreadable(model, index, exc) from exc
        extra = message.model_extra or {}
        if message.role == "assistant":
            for call in extra.get("tool_calls") or []:
                if isinstance(call, dict):
                    names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
            out.append({"role": "assistant", "content": _assistant_text(message, text)})
        elif message.role in ("tool", "function"):
            name = message.name or names.get(str(extra.get("tool_call_id")), "")
            if native:
                out.append({"role": "tool", "content": text, "name": name,
                            "tool_call_id": extra.get("tool_call_id")})
            else:
                body = json.dumps({"name": name, "content": text})
                out.append({"role": "user",
                            "content": f"<tool_response>\n{body}\n</tool_response>"})
        else:
            out.append({"role": message.role, "content": text})
    return out


def chat_messages(request: ChatCompletionRequest, native: bool,
                  ) -> tuple[list[Message], ToolPlan | None, list[Tool] | None]:
    """A chat's messages for a chat template, its tool plan, and the ``tools`` to hand the
    template: the template's own rendering when it renders tools (``native``), else the tools
    described in the system prompt."""
    tool_plan = plan(request)
    messages = render_messages(request.messages, native, request.model)
    if tool_plan is not None and not native:
        messages = add_system_prompt(messages, tool_plan)
    return messages, tool_plan, tool_plan.openai_tools() if tool_plan and native else None


def system_prompt(tool_plan: ToolPlan) -> str:
    """The tools and the call format, for a template that does not render tools itself."""
    signatures = "\n".join(json.dumps({"type": "function", "function": f})
                           for f in tool_plan.functions)
    must = ("You must call one of these functions." if tool_plan.required
            else "Call a function when it helps to answer; otherwise answer directly.")
    return ("You are a function calling AI model. You are provided with function signatures "
            f"within <tools></tools> XML tags:\n<tools>\n{signatures}\n</tools>\n{must} For "
            "each function call return a JSON object with the function name and arguments "
            f"within {TOOL_OPEN}{TOOL_CLOSE} XML tags:\n{TOOL_OPEN}\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n' + TOOL_CLOSE)


def add_system_prompt(messages: list[Message], tool_plan: ToolPlan) -> list[Message]:
    prompt = system_prompt(tool_plan)
    if messages and messages[0]["role"] in ("system", "developer"):
        first: Message = {**messages[0], "content": f"{messages[0]['content']}\n\n{prompt}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


# -- the grammar --------------------------------------------------------------------------

def _arguments_schema(parameters: JsonObject) -> JsonObject:
    """The function's schema, or any JSON object when the grammar converter cannot take it
    (some JSON-schema features have no GBNF form); the call stays well-formed JSON."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        json_schema_to_gbnf(json.dumps(parameters))
    except Exception:  # the converter raises plain exceptions for what it does not support
        return {"type": "object"}
    return parameters


def grammar_text(tool_plan: ToolPlan, answer: str | None = None) -> str:
    """GBNF: one call (or up to ``MAX_PARALLEL_CALLS``), or for ``auto`` a plain answer; with
    ``answer`` (the GBNF of a ``response_format``) that answer follows it instead."""
    alternatives: list[JsonValue] = []
    schema: JsonObject = {"oneOf": alternatives}
    for function in tool_plan.functions:
        arguments = dict(_arguments_schema(function["parameters"]))
        # "#/$defs/..." references (pydantic's nested models) resolve from the root: the
        # definitions move there.
        for key in ("$defs", "definitions"):
            definitions = schema.setdefault(key, {})
            moved = arguments.pop(key, None)
            if isinstance(definitions, dict) and isinstance(moved, dict):
                definitions.update(moved)
        alternatives.append({"type": "object", "required": ["name", "arguments"],
                             "properties": {"name": {"const": function["name"]},
                                            "arguments": arguments}})
    try:
        converted = jsongrammar.schema_gbnf(schema, prop_order=["name", "arguments"])
    except Exception as exc:  # e.g. two functions defining the same name differently
        raise InvalidRequest(f"The functions' 'parameters' schemas are not supported: {exc}",
                             param="tools", code="invalid_value") from exc
    # The converter's start rule becomes ``call``; nothing else refers to it by that name.
    converted = re.sub(r"^root ::=", "call ::=", converted, flags=re.MULTILINE)
    more = f' ("\\n" block){{0,{MAX_PARALLEL_CALLS - 1}}}' if tool_plan.parallel else ""
    rules = [f"calls ::= block{more}",
             f'block ::= "{TOOL_OPEN}\\n" call "\\n{TOOL_CLOSE}"']
    if tool_plan.required:
        rules.insert(0, "root ::= calls")
    elif answer is not None:
        taken = {"root", "calls", "block", *jsongrammar.rules(converted)}
        renamed, start = jsongrammar.prefixed(answer, "answer-", taken)
        rules.insert(0, f"root ::= calls | {start}")
        rules.append(renamed)
    else:
        # A plain answer may not open with "<" (the start of a call) nor with blank space.
        rules.insert(0, "root ::= calls | text")
        rules.append("text ::= [^<\\x00 \\t\\r\\n] [^\\x00]*")
    return "\n".join(rules) + "\n" + converted


def grammar(tool_plan: ToolPlan) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(grammar_text(tool_plan), verbose=False)
