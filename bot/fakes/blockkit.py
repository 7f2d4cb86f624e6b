"""Block Kit validation with Slack's documented limits, for the fake Slack Web API.

Errors read like Slack's own: ``"must be less than 3001 characters [json-pointer:/blocks/0/text/text]"``.
The Web API wraps them as ``errors`` and as ``response_metadata.messages`` (prefixed ``[ERROR] ``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.fakes.blockkit_schema import (
    ACCESSORY_TYPES,
    ACTIONS_TYPES,
    BLOCK_KEYS,
    ELEMENT_KEYS,
    INPUT_TYPES,
    MAX_MESSAGE_BLOCKS,
    MAX_MESSAGE_TEXT,
    MAX_VIEW_BLOCKS,
    TEXT_TYPES,
    VIEW_KEYS,
)

__all__ = ["MAX_MESSAGE_BLOCKS", "MAX_MESSAGE_TEXT", "MAX_VIEW_BLOCKS", "validate_blocks", "validate_view"]

def pointer_error(message: str, pointer: str) -> str:
    """One Slack-style error line naming the offending field by JSON pointer."""
    return f"{message} [json-pointer:{pointer}]"


class _Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.block_ids: set[str] = set()
        self.action_ids: set[str] = set()

    def fail(self, message: str, pointer: str) -> None:
        self.errors.append(pointer_error(message, pointer))

    def keys(self, obj: dict[str, Any], allowed: set[str], ptr: str) -> None:
        for key in obj:
            if key not in allowed:
                self.fail(f"invalid additional property: {key}", ptr)

    def string(self, value: Any, ptr: str, *, max_len: int, min_len: int = 1) -> bool:
        if not isinstance(value, str):
            self.fail("must be a string", ptr)
            return False
        if len(value) < min_len:
            self.fail(f"must be more than {min_len - 1} characters", ptr)
            return False
        if len(value) > max_len:
            self.fail(f"must be less than {max_len + 1} characters", ptr)
            return False
        return True

    def text(self, obj: Any, ptr: str, *, max_len: int, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            self.fail("must provide an object", ptr)
            return
        kind = obj.get("type")
        allowed = ("plain_text",) if plain_only else TEXT_TYPES
        if kind not in allowed:
            self.fail("must be a valid enum value", f"{ptr}/type")
            return
        extra = "emoji" if kind == "plain_text" else "verbatim"
        self.keys(obj, {"type", "text", extra}, ptr)
        if "text" not in obj:
            self.fail("missing required field: text", ptr)
            return
        self.string(obj["text"], f"{ptr}/text", max_len=max_len)

    def unique_id(self, kind: str, value: Any, ptr: str, seen: set[str]) -> None:
        if not self.string(value, ptr, max_len=255):
            return
        if value in seen:
            self.fail(f'`{kind}` "{value}" already exists', ptr)
        seen.add(value)

    def option(self, obj: Any, ptr: str, *, plain_only: bool, url: bool = False) -> str | None:
        if not isinstance(obj, dict):
            self.fail("must provide an object", ptr)
            return None
        self.keys(obj, {"text", "value", "description"} | ({"url"} if url else set()), ptr)
        self.text(obj.get("text"), f"{ptr}/text", max_len=75, plain_only=plain_only)
        if "description" in obj:
            self.text(obj["description"], f"{ptr}/description", max_len=75, plain_only=plain_only)
        if "value" not in obj:
            self.fail("missing required field: value", ptr)
            return None
        if self.string(obj["value"], f"{ptr}/value", max_len=150):
            return str(obj["value"])
        return None

    def options(self, items: Any, ptr: str, *, max_items: int, min_items: int = 1,
                plain_only: bool = True, url: bool = False) -> list[str]:
        if not isinstance(items, list):
            self.fail("must provide an array", ptr)
            return []
        if len(items) > max_items:
            self.fail(f"no more than {max_items} items allowed", ptr)
        if len(items) < min_items:
            self.fail(f"must provide at least {min_items} items", ptr)
        values = [self.option(o, f"{ptr}/{i}", plain_only=plain_only, url=url) for i, o in enumerate(items)]
        return [v for v in values if v is not None]

    def confirm(self, obj: Any, ptr: str) -> None:
        if not isinstance(obj, dict):
            self.fail("must provide an object", ptr)
            return
        self.keys(obj, {"title", "text", "confirm", "deny", "style"}, ptr)
        for key, limit, plain in (("title", 100, True), ("text", 300, False),
                                  ("confirm", 30, True), ("deny", 30, True)):
            if key in obj:
                self.text(obj[key], f"{ptr}/{key}", max_len=limit, plain_only=plain)
            else:
                self.fail(f"missing required field: {key}", ptr)

    def element(self, obj: Any, ptr: str, allowed: set[str]) -> None:
        if not isinstance(obj, dict):
            self.fail("must provide an object", ptr)
            return
        kind = obj.get("type")
        if kind not in allowed or kind not in ELEMENT_KEYS:
            self.fail("must be a valid enum value", f"{ptr}/type")
            return
        self.keys(obj, ELEMENT_KEYS[kind], ptr)
        if kind != "image":
            if "action_id" in obj:
                self.unique_id("action_id", obj["action_id"], f"{ptr}/action_id", self.action_ids)
            if "placeholder" in obj:
                self.text(obj["placeholder"], f"{ptr}/placeholder", max_len=150, plain_only=True)
            if "confirm" in obj:
                self.confirm(obj["confirm"], f"{ptr}/confirm")
        _ELEMENT_CHECKS.get(kind, _no_check)(self, obj, ptr)


def _no_check(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    return None


def _button(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    v.text(obj.get("text"), f"{ptr}/text", max_len=75, plain_only=True)
    if "value" in obj:
        v.string(obj["value"], f"{ptr}/value", max_len=2000)
    if "url" in obj:
        v.string(obj["url"], f"{ptr}/url", max_len=3000)
    if "style" in obj and obj["style"] not in ("primary", "danger"):
        v.fail("must be a valid enum value", f"{ptr}/style")


def _select(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    if "options" in obj and "option_groups" in obj:
        v.fail("must provide exactly one of options or option_groups", ptr)
    values: list[str] = []
    if "options" in obj:
        values = v.options(obj["options"], f"{ptr}/options", max_items=100)
    elif "option_groups" in obj:
        groups = obj["option_groups"]
        if not isinstance(groups, list) or len(groups) > 100:
            v.fail("no more than 100 items allowed", f"{ptr}/option_groups")
            return
        for i, group in enumerate(groups):
            gptr = f"{ptr}/option_groups/{i}"
            if not isinstance(group, dict):
                v.fail("must provide an object", gptr)
                continue
            v.text(group.get("label"), f"{gptr}/label", max_len=75, plain_only=True)
            values += v.options(group.get("options"), f"{gptr}/options", max_items=100)
    else:
        v.fail("missing required field: options", ptr)
    _initial_options(v, obj, ptr, values)


def _initial_options(v: _Validator, obj: dict[str, Any], ptr: str, values: list[str]) -> None:
    chosen: list[tuple[Any, str]] = []
    if "initial_option" in obj:
        chosen.append((obj["initial_option"], f"{ptr}/initial_option"))
    if "initial_options" in obj:
        items = obj["initial_options"]
        if isinstance(items, list):
            chosen += [(o, f"{ptr}/initial_options/{i}") for i, o in enumerate(items)]
        else:
            v.fail("must provide an array", f"{ptr}/initial_options")
    for option, optr in chosen:
        value = option.get("value") if isinstance(option, dict) else None
        if value not in values:
            v.fail("must match one of the provided options", optr)


def _choice(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    values = v.options(obj.get("options"), f"{ptr}/options", max_items=10, plain_only=False)
    _initial_options(v, obj, ptr, values)


def _overflow(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    v.options(obj.get("options"), f"{ptr}/options", max_items=5, min_items=2, url=True)


def _pattern(check: Callable[[str], bool], key: str) -> Callable[[_Validator, dict[str, Any], str], None]:
    def run(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
        if key in obj and not (isinstance(obj[key], str) and check(obj[key])):
            v.fail("does not match the required format", f"{ptr}/{key}")
    return run


def _is_date(s: str) -> bool:
    parts = s.split("-")
    return len(parts) == 3 and [len(p) for p in parts] == [4, 2, 2] and all(p.isdigit() for p in parts)


def _is_time(s: str) -> bool:
    parts = s.split(":")
    return len(parts) == 2 and all(len(p) == 2 and p.isdigit() for p in parts) and int(parts[0]) < 24 \
        and int(parts[1]) < 60


def _text_input(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    for key in ("min_length", "max_length"):
        if key in obj and not (isinstance(obj[key], int) and 0 <= obj[key] <= 3000):
            v.fail("must be an integer between 0 and 3000", f"{ptr}/{key}")
    if "initial_value" in obj:
        v.string(obj["initial_value"], f"{ptr}/initial_value", max_len=3000, min_len=0)


def _image(v: _Validator, obj: dict[str, Any], ptr: str) -> None:
    if "image_url" not in obj and "slack_file" not in obj:
        v.fail("missing required field: image_url", ptr)
    if "image_url" in obj:
        v.string(obj["image_url"], f"{ptr}/image_url", max_len=3000)
    v.string(obj.get("alt_text"), f"{ptr}/alt_text", max_len=2000)


_ELEMENT_CHECKS: dict[str, Callable[[_Validator, dict[str, Any], str], None]] = {
    "button": _button,
    "static_select": _select,
    "multi_static_select": _select,
    "checkboxes": _choice,
    "radio_buttons": _choice,
    "overflow": _overflow,
    "datepicker": _pattern(_is_date, "initial_date"),
    "timepicker": _pattern(_is_time, "initial_time"),
    "plain_text_input": _text_input,
    "image": _image,
}


def _block(v: _Validator, block: Any, ptr: str) -> None:
    if not isinstance(block, dict):
        v.fail("must provide an object", ptr)
        return
    kind = block.get("type")
    if kind not in BLOCK_KEYS:
        v.fail("must be a valid enum value", f"{ptr}/type")
        return
    v.keys(block, BLOCK_KEYS[kind], ptr)
    if "block_id" in block:
        v.unique_id("block_id", block["block_id"], f"{ptr}/block_id", v.block_ids)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            v.fail("must provide text or fields", ptr)
        if "text" in block:
            v.text(block["text"], f"{ptr}/text", max_len=3000)
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list):
                v.fail("must provide an array", f"{ptr}/fields")
            else:
                if len(fields) > 10:
                    v.fail("no more than 10 items allowed", f"{ptr}/fields")
                for i, field in enumerate(fields):
                    v.text(field, f"{ptr}/fields/{i}", max_len=2000)
        if "accessory" in block:
            v.element(block["accessory"], f"{ptr}/accessory", ACCESSORY_TYPES)
    elif kind == "header":
        v.text(block.get("text"), f"{ptr}/text", max_len=150, plain_only=True)
    elif kind in ("context", "actions"):
        _element_list(v, block, ptr, kind)
    elif kind == "input":
        v.text(block.get("label"), f"{ptr}/label", max_len=2000, plain_only=True)
        if "hint" in block:
            v.text(block["hint"], f"{ptr}/hint", max_len=2000, plain_only=True)
        if "element" not in block:
            v.fail("missing required field: element", ptr)
        else:
            v.element(block["element"], f"{ptr}/element", INPUT_TYPES)
    elif kind == "image":
        _image(v, block, ptr)
        if "title" in block:
            v.text(block["title"], f"{ptr}/title", max_len=2000, plain_only=True)
    elif kind == "markdown":
        v.string(block.get("text"), f"{ptr}/text", max_len=12000)


def _element_list(v: _Validator, block: dict[str, Any], ptr: str, kind: str) -> None:
    elements = block.get("elements")
    limit = 10 if kind == "context" else 25
    if not isinstance(elements, list) or not elements:
        v.fail("missing required field: elements", ptr)
        return
    if len(elements) > limit:
        v.fail(f"no more than {limit} items allowed", f"{ptr}/elements")
    for i, element in enumerate(elements):
        eptr = f"{ptr}/elements/{i}"
        if kind == "actions":
            v.element(element, eptr, ACTIONS_TYPES)
        elif isinstance(element, dict) and element.get("type") in TEXT_TYPES:
            v.text(element, eptr, max_len=3000)
        else:
            v.element(element, eptr, {"image"})


def validate_blocks(blocks: Any, *, max_blocks: int, pointer: str = "/blocks") -> list[str]:
    """Validate a list of blocks; return Slack-style error lines (empty when valid)."""
    v = _Validator()
    _blocks(v, blocks, max_blocks=max_blocks, pointer=pointer)
    return v.errors


def _blocks(v: _Validator, blocks: Any, *, max_blocks: int, pointer: str) -> None:
    if not isinstance(blocks, list):
        v.fail("must provide an array", pointer)
        return
    if len(blocks) > max_blocks:
        v.fail(f"no more than {max_blocks} items allowed", pointer)
    for i, block in enumerate(blocks):
        _block(v, block, f"{pointer}/{i}")


def validate_view(view: Any, *, pointer: str = "/view") -> list[str]:
    """Validate a modal or home view (title/submit/close ≤24, private_metadata ≤3000, ≤100 blocks)."""
    v = _Validator()
    if not isinstance(view, dict):
        v.fail("must provide an object", pointer)
        return v.errors
    kind = view.get("type")
    if kind not in VIEW_KEYS:
        v.fail("must be a valid enum value", f"{pointer}/type")
        return v.errors
    v.keys(view, VIEW_KEYS[kind], pointer)
    if kind == "modal":
        if "title" not in view:
            v.fail("missing required field: title", pointer)
        else:
            v.text(view["title"], f"{pointer}/title", max_len=24, plain_only=True)
        for key in ("submit", "close"):
            if key in view:
                v.text(view[key], f"{pointer}/{key}", max_len=24, plain_only=True)
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or [])
        if has_input and "submit" not in view:
            v.fail("must provide submit when there are input blocks", pointer)
    if "private_metadata" in view:
        v.string(view["private_metadata"], f"{pointer}/private_metadata", max_len=3000, min_len=0)
    for key in ("callback_id", "external_id"):
        if key in view:
            v.string(view[key], f"{pointer}/{key}", max_len=255)
    if "blocks" not in view:
        v.fail("missing required field: blocks", pointer)
    else:
        _blocks(v, view["blocks"], max_blocks=MAX_VIEW_BLOCKS, pointer=f"{pointer}/blocks")
    return v.errors
