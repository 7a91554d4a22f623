"""Signed, expiring artifact links: what makes media in answers load when the API needs a key.

A browser fetching ``<img src>`` cannot send ``Authorization: Bearer``. So the links
the server writes (answers, run views, media endpoints) carry ``?expires=<unix
seconds>&sig=<hex>``, where ``sig`` is an HMAC-SHA256 over the artifact id and the
expiry. Such a link downloads without the key until it expires; it opens that one
artifact only, and changing the id or the expiry breaks the signature.

>>> signer = UrlSigner(b"secret", ttl=60)
>>> query = signer.query("sha256:" + "0" * 64, now=1000)
>>> signer.check("sha256:" + "0" * 64, query["expires"], query["sig"], now=1030)
>>> signer.check("sha256:" + "0" * 64, query["expires"], "0" * 64, now=1030)
Traceback (most recent call last):
...
orchestrator.server._signing.BadSignature: the link's signature does not match
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import parse_qs

from orchestrator.errors import OrchestratorError

__all__ = ["BadSignature", "UrlSigner", "artifact_id_of_path", "signer_for"]

_PATH = re.compile(r"^/v1/artifacts/(?:sha256:)?([0-9a-f]{64})$")


class BadSignature(OrchestratorError):
    """A signed link that is expired, tampered with or malformed (HTTP 403)."""


def artifact_id_of_path(path: str) -> str | None:
    """``sha256:<hex>`` when ``path`` is an artifact download (``/v1/artifacts/{id}``), else None."""
    m = _PATH.match(path)
    return f"sha256:{m.group(1)}" if m else None


class UrlSigner:
    """Signs and checks ``(artifact id, expiry)`` pairs with one secret key."""

    def __init__(self, key: bytes, *, ttl: int) -> None:
        if not key:
            raise ValueError("a URL signing key cannot be empty")
        self._key = key
        self.ttl = ttl

    def _mac(self, artifact_id: str, expires: int) -> str:
        message = f"{_canonical(artifact_id)}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, artifact_id: str, *, now: float | None = None) -> dict[str, str]:
        """The query parameters of a link to ``artifact_id`` valid for ``ttl`` seconds."""
        expires = int(now if now is not None else time.time()) + self.ttl
        return {"expires": str(expires), "sig": self._mac(artifact_id, expires)}

    def sign(self, url: str, artifact_id: str) -> str:
        """``url`` with the signature appended."""
        q = self.query(artifact_id)
        return f"{url}{'&' if '?' in url else '?'}expires={q['expires']}&sig={q['sig']}"

    def check(self, artifact_id: str, expires: str | None, sig: str | None, *, now: float | None = None) -> None:
        """Raise :class:`BadSignature` unless ``sig`` signs ``artifact_id`` until a future ``expires``."""
        if not expires or not sig:
            raise BadSignature("a signed link needs both expires= and sig=")
        try:
            until = int(expires)
        except ValueError:
            raise BadSignature("the link's expires= is not a number") from None
        if not hmac.compare_digest(self._mac(artifact_id, until).encode(), sig.strip().lower().encode()):
            raise BadSignature("the link's signature does not match")
        if until < (now if now is not None else time.time()):
            raise BadSignature("the link has expired; ask for the artifact again for a fresh link",
                               expired_at=until)

    def check_request(self, path: str, query_string: bytes) -> bool | None:
        """For an artifact download with ``sig=``: True when valid (raises otherwise);
        None when the request is not a signed download."""
        artifact_id = artifact_id_of_path(path)
        if artifact_id is None:
            return None
        query = parse_qs(query_string.decode("latin-1"))
        if "sig" not in query:
            return None
        self.check(artifact_id, (query.get("expires") or [None])[0], (query.get("sig") or [None])[0])
        return True


def _canonical(artifact_id: str) -> str:
    return artifact_id if artifact_id.startswith("sha256:") else f"sha256:{artifact_id}"


def signer_for(api_keys: list[str], key: str | None, ttl: int) -> UrlSigner | None:
    """The server's signer: the configured key, else one derived from the API keys; None without keys."""
    if key:
        return UrlSigner(key.encode(), ttl=ttl)
    if not api_keys:
        return None
    derived = hashlib.sha256(b"orchestrator artifact links\n" + "\n".join(sorted(api_keys)).encode()).digest()
    return UrlSigner(derived, ttl=ttl)
