"""Scrubbing credentials out of text before it reaches an error message, a log or an event.

Provider errors quote what they were sent: an HTTP client's message carries the request
URL (Google's API takes its key as ``?key=...``), and a 401 may echo the key it refused.
Anything the router shows about such an error goes through :func:`redact` (or
:func:`describe`), which masks credential-shaped text with ``***`` and keeps enough of the
shape (``key=***``, ``Bearer ***``, ``sk-proj-***``) to tell what was there.

Two nets catch a secret: patterns for the shapes credentials take (query parameters,
auth headers, well-known key formats, passwords in URLs), and a process-wide registry of
the exact values the router knows (the ``SecretStr`` fields of its chat models, see
:func:`register_secrets_of`), which catches keys of any shape.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import quote

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = [
    "describe",
    "redact",
    "register_secret",
    "register_secrets_of",
    "secrets_of",
]

MASK = "***"

MAX_SECRETS = 1024
"""How many registered values the registry holds; past it, the oldest are dropped."""

MIN_SECRET_LENGTH = 8
"""Shorter values are not registered: every occurrence of a registered value is masked, so
a short one ("test", a placeholder "sk-fake") would mangle ordinary words, and a real API
key is never that short."""

_QUERY_NAMES = (
    r"api[_-]?key|x-api-key|x-goog-api-key|access[_-]?token|refresh[_-]?token|id[_-]?token"
    r"|client[_-]?secret|x-amz-security-token|x-amz-signature"
    r"|key|token|auth|secret|password|passwd|signature|sig"
)
# With ":" only header-like names count: "password: too short" is prose, not a secret.
_HEADER_NAMES = r"x-api-key|x-goog-api-key|api[_-]?key|x-auth-token"
_TOKEN = r"[A-Za-z0-9._~+/-]"

# Every alternative has exactly one capturing group: the text kept before the mask.
_ALTERNATIVES = (
    # Authorization headers, as an HTTP header, a dict entry or a keyword argument.
    r"(?<![\w-])((?i:(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?i:bearer|basic|token|digest|apikey)\s+)?)[^\s,;\"'<>&]+",
    rf"(?<![\w-])((?i:{_HEADER_NAMES})[\"']?\s*:\s*[\"']?)[^\s,;\"'<>&]+",
    rf"(?<![\w-])((?i:{_QUERY_NAMES})=[\"']?)[^\s&#\"'<>,;)\]}}]+",
    # A bare "Bearer <token>": the token must look random (a digit, base64 punctuation or
    # an inner capital), so "Bearer tokens expire" and "Basic authentication" stay as
    # they are.
    rf"(?<![\w-])((?i:bearer|basic)\s+)(?={_TOKEN}*(?:[0-9+/=_]|[a-z][A-Z])){_TOKEN}{{8,}}=*",
    # The password of https://user:password@host.
    # (The look-behind starts the scheme at a word's start only: without it, a long word
    # would be rescanned from each of its letters.)
    r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/@]+(?=@)",
    # OpenAI and Anthropic keys, also as an API masks them in an error ("sk-abc1***wxyz").
    r"(?<![A-Za-z0-9_-])(sk-(?:(?:proj|ant|svcacct|admin)-)?)"
    r"(?=[A-Za-z0-9_*.-]{16})[A-Za-z0-9_*.-]*[A-Za-z0-9_*-]",
    r"(?<![A-Za-z0-9_-])(AIza)[A-Za-z0-9_-]{35,}",
    r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    r"(?<![A-Za-z0-9_])(gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}",
    r"(?<![A-Za-z0-9-])(xox[abposr]-)[A-Za-z0-9-]{10,}",
    r"(?<![A-Za-z0-9_-])(eyJ)[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
)
_PATTERN = re.compile("|".join(_ALTERNATIVES))

# Lower-cased substrings without which no alternative can match: most error text has none
# of them and skips the regex.
_TRIGGERS = (
    "key",
    "token",
    "auth",
    "secret",
    "passw",
    "sig",
    "bearer",
    "basic",
    "@",
    "sk-",
    "aiza",
    "akia",
    "asia",
    "gh",
    "xox",
    "eyj",
)


def _keep_prefix(match: re.Match[str]) -> str:
    keep = match[match.lastindex] if match.lastindex else ""
    return f"{keep}{MASK}"


class _Registry:
    """A bounded, thread-safe, insertion-ordered set of secret values.

    It holds the values themselves, not hashes: finding a secret in arbitrary text needs
    the text of the secret. They live in memory only and are never shown.
    """

    def __init__(self, limit: int = MAX_SECRETS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}
        # Read without the lock: replacing a tuple is atomic, so a reader sees the old or
        # the new one, never half of either. Longest first, so that a secret containing
        # another is masked whole.
        self.by_length: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH:
            return
        # A key with "/", "+" or "=" (AWS secrets, base64) shows up percent-encoded in URLs.
        forms = dict.fromkeys((value, quote(value, safe="")))
        with self._lock:
            for form in forms:
                self._values.pop(form, None)
                self._values[form] = None
            while len(self._values) > self._limit:
                del self._values[next(iter(self._values))]
            self.by_length = tuple(sorted(self._values, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for value in self.by_length:
            if value in text:
                text = text.replace(value, MASK)
        return text


_REGISTRY = _Registry()


def redact(text: str) -> str:
    """``text`` with every credential in it replaced by ``***``.

    Masks registered secrets (see :func:`register_secret`) wherever they appear, then
    credential-shaped text: URL query parameters named like a credential (``key``,
    ``api_key``, ``token``, ``signature``, ...), ``Authorization``, ``x-api-key`` and
    ``x-goog-api-key`` values, ``Bearer``/``Basic`` tokens, passwords in URLs, and keys
    shaped like OpenAI/Anthropic (``sk-``), Google (``AIza``), AWS (``AKIA``), GitHub
    (``ghp_``), Slack (``xoxb-``) keys or JWTs. Ordinary text is returned unchanged.

    Example:
        >>> redact("GET https://example.com/v1/models?key=" + "a1" * 10 + "&alt=json")
        'GET https://example.com/v1/models?key=***&alt=json'
        >>> redact("Incorrect API key provided: sk-proj-" + "Ab3" * 8 + ".")
        'Incorrect API key provided: sk-proj-***.'
        >>> redact("429 Too Many Requests for gpt-4o-mini")
        '429 Too Many Requests for gpt-4o-mini'
    """
    text = _REGISTRY.mask(text)
    lowered = text.lower()
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return text
    return _PATTERN.sub(_keep_prefix, text)


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` for an error, its message redacted; never raises.

    An error whose ``str()`` raises is described by its type and that failure; one with an
    empty message by its type alone.

    Example:
        >>> describe(PermissionError("401 for Authorization: Bearer " + "x9" * 12))
        'PermissionError: 401 for Authorization: Bearer ***'
        >>> describe(TimeoutError())
        'TimeoutError'
    """
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as failure:
        # Not the failure's own text: it may quote the same secrets.
        return f"{name}: <message unavailable: str() raised {type(failure).__name__}>"
    return f"{name}: {redact(text)}" if text else name


def register_secret(value: str) -> None:
    """Mask ``value`` (and its percent-encoded form) in everything :func:`redact` sees.

    Values shorter than ``MIN_SECRET_LENGTH`` (8) are ignored; the registry keeps the
    ``MAX_SECRETS`` (1024) most recently registered values, process-wide.

    Example:
        >>> register_secret("zq" + "7" * 10)
        >>> redact("rejected key zq7777777777")
        'rejected key ***'
    """
    _REGISTRY.add(value)


def _children(node: object) -> Iterator[object]:
    if isinstance(node, BaseModel):
        # Fields only: properties and private attributes may compute, connect or raise.
        for name in type(node).model_fields:
            yield getattr(node, name, None)
        yield from (node.__pydantic_extra__ or {}).values()
    elif isinstance(node, Mapping):
        yield from node.values()
    elif isinstance(node, (list, tuple, set, frozenset)):
        yield from node


def secrets_of(obj: object, *, max_depth: int = 8) -> list[str]:
    """Every ``SecretStr``/``SecretBytes`` value reachable from ``obj``, in the order found.

    Walks pydantic fields (a LangChain chat model keeps its key as ``SecretStr``; a
    ``RunnableBinding`` wraps its model in ``.bound``), mappings, lists, tuples and sets,
    ``max_depth`` levels down. Objects that fail to yield their contents are skipped.

    Example:
        >>> from pydantic import BaseModel, SecretStr
        >>> class Client(BaseModel):
        ...     api_key: SecretStr
        >>> secrets_of({"primary": Client(api_key=SecretStr("k" * 12))}) == ["k" * 12]
        True
    """
    found: dict[str, None] = {}
    # Keyed by id, holding the object so that its id cannot be reused during the walk.
    seen: dict[int, object] = {}
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, SecretStr):
            found[node.get_secret_value()] = None
            continue
        if isinstance(node, SecretBytes):
            # Bytes that are not text cannot appear in an error message as such.
            with contextlib.suppress(UnicodeDecodeError):
                found[node.get_secret_value().decode()] = None
            continue
        if depth >= max_depth or id(node) in seen or isinstance(node, (str, bytes)):
            continue
        seen[id(node)] = node
        try:
            children = list(_children(node))
        except Exception:
            continue  # a third-party object that cannot be read is not ours to fix
        # Reversed onto the stack so that children are visited in their own order.
        stack.extend((child, depth + 1) for child in reversed(children))
    return list(found)


def register_secrets_of(obj: object) -> int:
    """Register every secret :func:`secrets_of` finds in ``obj``; return how many it found.

    One call per provider target, when the router is built, is enough for the keys of its
    chat models to be masked in every error the router shows.

    Example:
        >>> from pydantic import BaseModel, SecretStr
        >>> class Client(BaseModel):
        ...     api_key: SecretStr
        >>> register_secrets_of(Client(api_key=SecretStr("wv" + "5" * 10)))
        1
        >>> redact("bad key wv5555555555")
        'bad key ***'
    """
    values = secrets_of(obj)
    for value in values:
        register_secret(value)
    return len(values)
