"""The fake Slack's ``views.*`` methods, as plain functions over `SlackState`: modals opened and pushed
with a trigger id (used once, within its lifetime; at most Slack's stack of three), updated by view id or
external id (with ``hash`` guarding against a stale update), and the App Home published per user, each view
checked against Block Kit's limits. Each takes the merged request arguments and returns the ``ok: true``
body or raises `ApiFailure`.
"""

from __future__ import annotations

from typing import Any

from bot.fakes.blockkit import validate_view
from bot.fakes.slack_args import ApiFailure, json_arg, require
from bot.fakes.slack_state import MAX_MODAL_STACK, TRIGGER_LIFETIME_S, SlackState, View


def _checked_view(args: dict[str, Any]) -> dict[str, Any]:
    require(args, "view")
    view = json_arg(args, "view", "invalid_arguments")
    errors = validate_view(view)
    if errors:
        raise ApiFailure("invalid_arguments", errors)
    assert isinstance(view, dict)
    return view


def _use_trigger(state: SlackState, args: dict[str, Any]) -> str:
    require(args, "trigger_id")
    trigger = state.triggers.get(str(args["trigger_id"]))
    if trigger is None:
        raise ApiFailure("invalid_trigger_id")
    if state.clock() - trigger.issued_at > TRIGGER_LIFETIME_S:
        raise ApiFailure("expired_trigger_id")
    if trigger.used:
        raise ApiFailure("exchanged_trigger_id")
    trigger.used = True
    return trigger.user_id


def _new_view(state: SlackState, user_id: str, body: dict[str, Any], *, root: str | None = None,
              previous: str | None = None) -> View:
    view_id = state.new_id("V")
    return View(id=view_id, user_id=user_id, body=body, hash=state.view_hash(body, state.next_ts()),
                team_id=state.team_id, app_id=state.app_id, bot_id=state.bot_id,
                root_view_id=root or view_id, previous_view_id=previous)


def _external_id_free(state: SlackState, body: dict[str, Any], own: View | None = None) -> None:
    ext = body.get("external_id")
    other = state.find_view(external_id=ext) if ext else None
    if other is not None and other is not own:
        raise ApiFailure("duplicate_external_id")


def views_open(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    if view.get("type") != "modal":
        raise ApiFailure("invalid_arguments", ["must be a valid enum value [json-pointer:/view/type]"])
    user_id = _use_trigger(state, args)
    _external_id_free(state, view)
    opened = _new_view(state, user_id, view)
    state.modal_stacks[user_id] = [opened]
    return {"view": opened.to_api()}


def views_push(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    user_id = _use_trigger(state, args)
    stack = state.modal_stacks.get(user_id) or []
    if not stack:
        raise ApiFailure("not_found", ["no modal is open to push onto"])
    if len(stack) >= MAX_MODAL_STACK:
        raise ApiFailure("push_limit_reached")
    _external_id_free(state, view)
    pushed = _new_view(state, user_id, view, root=stack[0].id, previous=stack[-1].id)
    stack.append(pushed)
    return {"view": pushed.to_api()}


def views_update(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    view = _checked_view(args)
    if not args.get("view_id") and not args.get("external_id"):
        raise ApiFailure("invalid_arguments", ["must provide view_id or external_id"])
    target = state.find_view(args.get("view_id"), args.get("external_id"))
    if target is None or target.type != view.get("type"):
        raise ApiFailure("not_found")
    if args.get("hash") and args["hash"] != target.hash:
        raise ApiFailure("hash_conflict")
    _external_id_free(state, view, own=target)
    target.body, target.errors = view, {}
    target.hash = state.view_hash(view, state.next_ts())
    return {"view": target.to_api()}


def views_publish(state: SlackState, args: dict[str, Any]) -> dict[str, Any]:
    require(args, "user_id")
    view = _checked_view(args)
    if view.get("type") != "home":
        raise ApiFailure("invalid_arguments", ["must be a valid enum value [json-pointer:/view/type]"])
    user_id = str(args["user_id"])
    if user_id not in state.users:
        raise ApiFailure("user_not_found")
    current = state.homes.get(user_id)
    if args.get("hash") and (current is None or args["hash"] != current.hash):
        raise ApiFailure("hash_conflict")
    if current is None:
        current = _new_view(state, user_id, view)
        state.homes[user_id] = current
    else:
        current.body = view
        current.hash = state.view_hash(view, state.next_ts())
    return {"view": current.to_api()}

