"""Step-up-verified approvals: an Approve on a layer with ``step_up`` is recorded only after the
approver signs in afresh at the company's OpenID Connect provider, as themselves.

``links.py`` keeps the one-time links (issued at the click, bound to the request, layer, approver and
Slack user, expiring in minutes, used once); ``oidc.py`` is the OpenID Connect client (discovery,
authorization code flow with PKCE, ID token verification with joserfc); ``flow.py`` walks a link from
the click to the vote; ``web.py`` serves it under ``/step-up/`` in ``jitbot serve``.

Errors: ``StepUpError`` (a message safe to show in the browser; nothing was recorded).
"""


class StepUpError(Exception):
    """The step-up could not go on; ``str()`` is safe to show to the approver. Nothing was recorded."""
