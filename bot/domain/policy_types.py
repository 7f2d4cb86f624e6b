"""The building blocks of the policy's models: a strict, frozen model and a duration written as text
(``4h``, ``90m``). Pure."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from bot.domain.durations import format_duration, parse_duration

Duration = Annotated[
    timedelta,
    BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v),
    PlainSerializer(format_duration, return_type=str),
]



class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
