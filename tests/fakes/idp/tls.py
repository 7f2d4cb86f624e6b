"""A throwaway certificate authority for fake servers that clients insist on reaching over https."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme


def localhost_tls() -> tuple[ssl.SSLContext, str]:
    """A server TLS context for 127.0.0.1 / localhost and the path of the CA (PEM) that signed it.

    The CA file lives in a fresh temporary directory; clients trust it through their own settings
    (``ca_file`` in a connector, ``REQUESTS_CA_BUNDLE``, ``ssl.create_default_context(cafile=...)``).
    """
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca_path = Path(tempfile.mkdtemp(prefix="jitbot-ca-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return context, str(ca_path)
