"""A key change may leave ``scope`` and ``enabled`` out, but not set them to null (the key
keeps both): a 400 naming the field, never a database error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferd.auth.admin import KeyUpdate


@pytest.mark.parametrize("field", ["scope", "enabled"])
def test_null_scope_or_enabled_is_refused(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyUpdate.model_validate({field: None})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_absent_fields_stay_unset() -> None:
    change = KeyUpdate.model_validate({"rpm": 5})
    assert change.model_dump(exclude_unset=True) == {"rpm": 5}
    assert KeyUpdate(enabled=False).enabled is False
