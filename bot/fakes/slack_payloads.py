"""Pure builders for what Slack sends to an app: action objects and ``view.state.values``.

Everything here works from stored Block Kit (a message's or a view's blocks) and what a person chose,
so that a click or a submit carries exactly the shapes Slack's documented payloads carry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bot.fakes.slack_state import clone

# Element type -> the key its chosen value goes under in an action and in view.state.values.
_TEXT_INPUTS = {"plain_text_input", "email_text_input", "url_text_input", "number_input"}
_SINGLE_OPTION = {"static_select", "external_select", "radio_buttons", "overflow"}
_MULTI_OPTION = {"multi_static_select", "multi_external_select", "checkboxes"}
_SCALAR_KEYS = {
    "datepicker": ("selected_date", "initial_date"),
    "timepicker": ("selected_time", "initial_time"),
    "datetimepicker": ("selected_date_time", "initial_date_time"),
    "users_select": ("selected_user", "initial_user"),
    "multi_users_select": ("selected_users", "initial_users"),
    "conversations_select": ("selected_conversation", "initial_conversation"),
    "multi_conversations_select": ("selected_conversations", "initial_conversations"),
    "channels_select": ("selected_channel", "initial_channel"),
    "multi_channels_select": ("selected_channels", "initial_channels"),
}
STATEFUL_TYPES = _TEXT_INPUTS | _SINGLE_OPTION | _MULTI_OPTION | set(_SCALAR_KEYS)
_REQUIRED = "This field is required."


def block_id_of(block: Mapping[str, Any], index: int) -> str:
    """The block's id; Slack assigns one to blocks sent without, we derive a stable one."""
    return str(block.get("block_id") or f"auto-{index}")


def iter_elements(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Yield (block_id, block, element) for every interactive element in ``blocks``."""
    for index, block in enumerate(blocks):
        block_id = block_id_of(block, index)
        kind = block.get("type")
        if kind == "actions":
            for element in block.get("elements", []):
                yield block_id, block, element
        elif kind == "section" and isinstance(block.get("accessory"), dict):
            yield block_id, block, block["accessory"]
        elif kind == "input" and isinstance(block.get("element"), dict):
            yield block_id, block, block["element"]


def find_element(blocks: list[dict[str, Any]], action_id: str,
                 block_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """The (block_id, element) with ``action_id``; KeyError naming what is there when absent."""
    seen = []
    for bid, _block, element in iter_elements(blocks):
        seen.append(f"{bid}/{element.get('action_id')}")
        if element.get("action_id") == action_id and block_id in (None, bid):
            return bid, element
    raise KeyError(f"no element with action_id {action_id!r}; elements: {seen}")


def _all_options(element: Mapping[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options") or []
    return options


def option_for(element: Mapping[str, Any], value: str) -> dict[str, Any]:
    """The full option object a person picks by its value (Slack sends text + value back)."""
    for option in _all_options(element):
        if option.get("value") == value:
            return clone(option)
    if element.get("type") in ("external_select", "multi_external_select"):
        return {"text": {"type": "plain_text", "text": value}, "value": value}
    choices = [o.get("value") for o in _all_options(element)]
    raise ValueError(f"{element.get('action_id')!r} has no option {value!r}; options: {choices}")


def chosen_value(element: Mapping[str, Any], choice: Any) -> dict[str, Any]:
    """The Slack-shaped value fields for ``choice`` (None = the element's initial value)."""
    kind = str(element.get("type"))
    if kind in _TEXT_INPUTS:
        value = element.get("initial_value") if choice is None else str(choice)
        return {"value": value}
    if kind in _SINGLE_OPTION:
        if choice is None:
            initial = element.get("initial_option")
            return {"selected_option": clone(initial) if initial else None}
        return {"selected_option": option_for(element, str(choice))}
    if kind in _MULTI_OPTION:
        if choice is None:
            return {"selected_options": clone(element.get("initial_options") or [])}
        values = [choice] if isinstance(choice, str) else list(choice)
        return {"selected_options": [option_for(element, str(v)) for v in values]}
    if kind in _SCALAR_KEYS:
        key, initial_key = _SCALAR_KEYS[kind]
        return {key: element.get(initial_key) if choice is None else choice}
    return {}


def _is_empty(fields: Mapping[str, Any]) -> bool:
    return all(v in (None, "", []) for v in fields.values())


def action_payload(block_id: str, element: Mapping[str, Any], choice: Any, action_ts: str) -> dict[str, Any]:
    """One entry of a block_actions payload's ``actions`` for a click or a choice."""
    action: dict[str, Any] = {"type": element.get("type"), "action_id": element.get("action_id"),
                              "block_id": block_id, "action_ts": action_ts}
    if element.get("type") == "button":
        action["text"] = clone(element.get("text"))
        for key in ("value", "style"):
            if key in element:
                action[key] = element[key]
    else:
        action.update(chosen_value(element, choice))
        if "placeholder" in element:
            action["placeholder"] = clone(element["placeholder"])
    return action


def _choice_for(values: Mapping[str, Any], block_id: str, action_id: str) -> Any:
    for key in (f"{block_id}/{action_id}", action_id, block_id):
        if key in values:
            return values[key]
    return None


def view_state(blocks: list[dict[str, Any]], values: Mapping[str, Any], *,
               check: bool) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Build ``state.values`` from what a person entered (keyed by action_id, block_id or
    "block_id/action_id"; absent = initial value). With ``check``, also return the errors Slack's
    client shows without sending anything (required fields, text length limits)."""
    state: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    known: set[str] = set()
    for block_id, block, element in iter_elements(blocks):
        kind = str(element.get("type"))
        action_id = str(element.get("action_id") or "")
        known.update({action_id, block_id, f"{block_id}/{action_id}"})
        if kind not in STATEFUL_TYPES:
            continue
        fields = chosen_value(element, _choice_for(values, block_id, action_id))
        state.setdefault(block_id, {})[action_id] = {"type": kind, **fields}
        if not check or block.get("type") != "input":
            continue
        if _is_empty(fields) and not block.get("optional", False):
            errors[block_id] = _REQUIRED
        text = fields.get("value")
        if isinstance(text, str) and text:
            if "max_length" in element and len(text) > int(element["max_length"]):
                errors[block_id] = f"Must be {element['max_length']} characters or fewer."
            if "min_length" in element and len(text) < int(element["min_length"]):
                errors[block_id] = f"Must be at least {element['min_length']} characters."
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"no input for {unknown}; known: {sorted(known)}")
    return state, errors
