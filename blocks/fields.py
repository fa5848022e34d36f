"""Field helpers shared by the blocks (no Prefect)."""

from __future__ import annotations

from enum import Enum

from pydantic import WithJsonSchema


def choice(enum: type[Enum]) -> WithJsonSchema:
    """``Annotated[MyEnum, choice(MyEnum)]``: the enum's values as a plain string choice in the JSON schema.

    With pydantic's default ``$ref`` to the enum's own schema, the Prefect UI shows
    the enum's title and docstring ("Policy", "Which system.") instead of the
    field's ``title`` and ``description``. Validation still produces the enum.
    """
    return WithJsonSchema({"type": "string", "enum": [m.value for m in enum]})
