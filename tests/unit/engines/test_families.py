"""Per-model-family handlers."""

from __future__ import annotations

import pytest

from inferd.engines import families


def test_detect_by_metadata() -> None:
    assert families.detect({"general.architecture": "gemma2"}).name == "gemma"
    assert families.detect({"tokenizer.chat_template": "<|im_start|>..."}).name == "chatml"
    assert families.detect({}).name == "chatml"  # no template: ChatML fallback
    mistral = {"tokenizer.chat_template": "raise_exception('System role not supported')"}
    assert families.detect(mistral).name == "mistral"
    assert families.detect({"tokenizer.chat_template": "{{ x }}"}).name == "default"
    assert families.detect({}, "gemma").name == "gemma"
    with pytest.raises(ValueError, match="unknown model family"):
        families.detect({}, "nope")


def test_developer_role_becomes_system() -> None:
    out = families.Family().prepare([{"role": "developer", "content": "be brief"},
                                     {"role": "user", "content": "hi"}])
    assert out[0] == {"role": "system", "content": "be brief"}


def test_family_without_system_role_folds_it_into_the_first_user_turn() -> None:
    out = families.Gemma().prepare([{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}])
    assert out == [{"role": "user", "content": "be brief\n\nhi"},
                   {"role": "assistant", "content": "hello"}]
    only_system = families.Gemma().prepare([{"role": "system", "content": "rules"}])
    assert only_system == [{"role": "user", "content": "rules"}]
