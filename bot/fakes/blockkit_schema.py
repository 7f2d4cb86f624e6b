"""Which Block Kit blocks, elements and keys Slack accepts, and where (from Slack's reference)."""

from __future__ import annotations

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40000

TEXT_TYPES = ("plain_text", "mrkdwn")
_COMMON_ELEMENT_KEYS = {"type", "action_id", "confirm", "focus_on_load", "placeholder"}
_OPTIONS_KEYS = _COMMON_ELEMENT_KEYS | {"options", "option_groups", "initial_option"}

# Allowed keys per element type (an unknown key is "invalid additional property" in Slack).
ELEMENT_KEYS: dict[str, set[str]] = {
    "button": {"type", "text", "action_id", "url", "value", "style", "confirm", "accessibility_label"},
    "static_select": _OPTIONS_KEYS,
    "multi_static_select": _OPTIONS_KEYS | {"initial_options", "max_selected_items"},
    "external_select": _COMMON_ELEMENT_KEYS | {"initial_option", "min_query_length"},
    "multi_external_select": _COMMON_ELEMENT_KEYS
    | {"initial_options", "min_query_length", "max_selected_items"},
    "users_select": _COMMON_ELEMENT_KEYS | {"initial_user"},
    "multi_users_select": _COMMON_ELEMENT_KEYS | {"initial_users", "max_selected_items"},
    "conversations_select": _COMMON_ELEMENT_KEYS
    | {"initial_conversation", "default_to_current_conversation", "response_url_enabled", "filter"},
    "multi_conversations_select": _COMMON_ELEMENT_KEYS
    | {"initial_conversations", "default_to_current_conversation", "max_selected_items", "filter"},
    "channels_select": _COMMON_ELEMENT_KEYS | {"initial_channel", "response_url_enabled"},
    "multi_channels_select": _COMMON_ELEMENT_KEYS | {"initial_channels", "max_selected_items"},
    "overflow": {"type", "action_id", "options", "confirm"},
    "datepicker": _COMMON_ELEMENT_KEYS | {"initial_date"},
    "timepicker": _COMMON_ELEMENT_KEYS | {"initial_time", "timezone"},
    "datetimepicker": {"type", "action_id", "initial_date_time", "confirm", "focus_on_load"},
    "checkboxes": {"type", "action_id", "options", "initial_options", "confirm", "focus_on_load"},
    "radio_buttons": {"type", "action_id", "options", "initial_option", "confirm", "focus_on_load"},
    "plain_text_input": {"type", "action_id", "initial_value", "multiline", "min_length", "max_length",
                         "dispatch_action_config", "focus_on_load", "placeholder"},
    "email_text_input": {"type", "action_id", "initial_value", "dispatch_action_config",
                         "focus_on_load", "placeholder"},
    "url_text_input": {"type", "action_id", "initial_value", "dispatch_action_config",
                       "focus_on_load", "placeholder"},
    "number_input": {"type", "action_id", "is_decimal_allowed", "initial_value", "min_value", "max_value",
                     "dispatch_action_config", "focus_on_load", "placeholder"},
    "image": {"type", "image_url", "alt_text", "slack_file"},
}
_SELECTS = {t for t in ELEMENT_KEYS if t.endswith("_select")}
ACCESSORY_TYPES = _SELECTS | {"button", "checkboxes", "datepicker", "image", "overflow", "radio_buttons",
                              "timepicker"}
ACTIONS_TYPES = _SELECTS | {"button", "checkboxes", "datepicker", "overflow", "radio_buttons", "timepicker",
                            "datetimepicker"}
INPUT_TYPES = _SELECTS | {"checkboxes", "datepicker", "radio_buttons", "timepicker", "datetimepicker",
                          "plain_text_input", "email_text_input", "url_text_input", "number_input"}
BLOCK_KEYS: dict[str, set[str]] = {
    "section": {"type", "block_id", "text", "fields", "accessory", "expand"},
    "divider": {"type", "block_id"},
    "header": {"type", "block_id", "text"},
    "context": {"type", "block_id", "elements"},
    "actions": {"type", "block_id", "elements"},
    "input": {"type", "block_id", "label", "element", "dispatch_action", "hint", "optional"},
    "image": {"type", "block_id", "image_url", "slack_file", "alt_text", "title"},
    "rich_text": {"type", "block_id", "elements"},
    "markdown": {"type", "block_id", "text"},
}
VIEW_KEYS: dict[str, set[str]] = {
    "modal": {"type", "title", "blocks", "close", "submit", "private_metadata", "callback_id",
              "clear_on_close", "notify_on_close", "external_id", "submit_disabled"},
    "home": {"type", "blocks", "private_metadata", "callback_id", "external_id"},
}
