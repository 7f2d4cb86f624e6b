"""The OAuth scopes the Google Workspace connector asks its service account's token for, each of which an
administrator delegates to the service account's client ID (Admin console > Security > Access and data
control > API controls > Domain-wide delegation): reading users, managing group members, and (with
``terminate_sessions: true``) signing users out. ``connectors/google_workspace.py`` asks for them and
``connectors/google_check.py`` names the one a use needs when it is missing.
"""

SCOPE_USER_READ = "https://www.googleapis.com/auth/admin.directory.user.readonly"
SCOPE_GROUP_MEMBER = "https://www.googleapis.com/auth/admin.directory.group.member"
SCOPE_USER_SECURITY = "https://www.googleapis.com/auth/admin.directory.user.security"
