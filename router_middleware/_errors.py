"""The router's exceptions: one tree, rooted in :class:`RouterError`.

::

    RouterError
    ├── ConfigurationError            bad config: names every problem (field or env var)
    ├── InvalidInputError             the router was given input it cannot route (also TypeError)
    ├── UnknownProviderError          a runtime control named a provider the router lacks
    ├── NoProviderForModelError       no enabled provider serves the requested model
    ├── NoProviderAvailableError      providers exist, but none could be admitted in time
    │                                 (circuit open, cooling down, out of capacity past max_wait)
    ├── AllProvidersFailedError       every candidate was tried and failed; keeps each error
    │   └── DeadlineExceededError     the request's overall deadline or attempt cap ran out
    └── ProviderError                 raised by the router about one provider's behaviour
        ├── ProviderTimeoutError      no answer / first chunk / next chunk in time (TimeoutError)
        ├── IncompleteStreamError     a stream ended without finishing (or sent a malformed chunk)
        │   └── PartialStreamError    a resumable stream could not be completed: keeps the
        │                             text the consumer was given, and the original error
        ├── InvalidProviderOutputError  a handler returned something that is not a response
        └── InvalidStructuredOutputError  an answer did not parse or validate against the schema

Errors raised by the providers themselves (HTTP errors, ``ModelError`` subclasses) are
not wrapped on their way out: they are kept in ``AllProvidersFailedError.errors`` and
chained as ``__cause__``; errors the router must not handle (bugs in user code,
``KeyboardInterrupt``, content-policy refusals) propagate untouched.

The message of every router error is scrubbed of credentials (see ``_redact``): provider
errors quote request URLs and rejected keys, and a router error's ``str()`` and ``repr()``
end up in logs. The provider's own error objects, kept as they are, are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._redact import describe, redact

__all__ = [
    "AllProvidersFailedError",
    "ConfigurationError",
    "DeadlineExceededError",
    "IncompleteStreamError",
    "InvalidInputError",
    "InvalidProviderOutputError",
    "InvalidStructuredOutputError",
    "NoProviderAvailableError",
    "NoProviderForModelError",
    "PartialStreamError",
    "ProviderError",
    "ProviderTimeoutError",
    "RouterError",
    "UnknownProviderError",
]


def _model_label(model: str | None) -> str:
    return repr(model) if model is not None else "(any model)"


class RouterError(Exception):
    """Base class of every error the router raises itself.

    String arguments are redacted, so its ``str()`` and ``repr()`` are safe to log
    whatever text a subclass or a caller puts in.

    Example:
        >>> RouterError("rejected: Authorization: Bearer " + "t0k" * 6)
        RouterError('rejected: Authorization: Bearer ***')
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigurationError(RouterError, ValueError):
    """The configuration is invalid.

    Attributes:
        problems: one line per problem, each naming the field or env var at fault
            (redacted: a rejected value may be a key).
    """

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems = [redact(p) for p in ([problems] if isinstance(problems, str) else problems)]
        head = "invalid router configuration"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}:\n{body}" if len(self.problems) > 1 else f"{head}: {body[4:]}")


class InvalidInputError(RouterError, TypeError):
    """The router was called with input it cannot turn into chat messages."""


class UnknownProviderError(RouterError, KeyError):
    """A provider name that the router does not have.

    Attributes:
        name: the name asked for; known: the names the router has.
    """

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown provider {name!r}; known: {', '.join(self.known) or 'none'}")

    def __str__(self) -> str:
        return str(self.args[0])


class NoProviderForModelError(RouterError, LookupError):
    """No enabled provider serves the requested model.

    Attributes:
        model: the requested model.
        available: models that enabled providers do serve.
    """

    def __init__(self, model: str | None, available: Sequence[str] = ()) -> None:
        self.model = model
        self.available = list(available)
        hint = f"; served models: {', '.join(self.available)}" if self.available else ""
        super().__init__(f"no enabled provider serves model {_model_label(model)}{hint}")


class NoProviderAvailableError(RouterError):
    """Providers serve the model, but none could take the request in time.

    Attributes:
        model: the requested model.
        reasons: provider name -> why it was skipped ("circuit open", "rate limited", ...),
            redacted.
        retry_after: seconds until the earliest provider is expected to have room,
            or ``None`` when that cannot be known.
    """

    def __init__(
        self,
        model: str | None,
        reasons: Mapping[str, str],
        retry_after: float | None = None,
    ) -> None:
        self.model = model
        self.reasons = {name: redact(why) for name, why in reasons.items()}
        self.retry_after = retry_after
        detail = "; ".join(f"{name}: {why}" for name, why in self.reasons.items())
        after = f" (retry after {retry_after:.3f}s)" if retry_after is not None else ""
        super().__init__(f"no provider available for model {_model_label(model)}{after}: {detail}")


class AllProvidersFailedError(RouterError):
    """Every candidate provider was tried and failed.

    Attributes:
        model: the requested model.
        errors: provider name -> the last error that provider raised, in try order, as
            raised (only the message is redacted).
        attempts: total provider calls made for this request.
        skipped: provider name -> why it was not tried (still out of capacity, circuit open),
            redacted.

    Example:
        >>> failure = ConnectionError("GET https://example.com/v1?key=" + "k3y" * 8)
        >>> err = AllProvidersFailedError("m", {"google": failure}, 1)
        >>> str(err).split(": ", 1)[1]
        'google: ConnectionError: GET https://example.com/v1?key=***'
        >>> "k3yk3y" in str(failure)  # the provider's own error is left as it was
        True
    """

    def __init__(
        self,
        model: str | None,
        errors: Mapping[str, BaseException],
        attempts: int = 0,
        *,
        skipped: Mapping[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        self.model = model
        self.errors = dict(errors)
        self.attempts = attempts
        self.skipped = {name: redact(why) for name, why in (skipped or {}).items()}
        detail = "; ".join(f"{n}: {describe(e)}" for n, e in self.errors.items())
        if self.skipped:
            detail += "; skipped " + "; ".join(f"{n}: {w}" for n, w in self.skipped.items())
        if message is None:
            message = f"all providers failed for model {_model_label(model)}"
        super().__init__(f"{message} after {attempts} attempt(s): {detail or 'no attempt made'}")


class DeadlineExceededError(AllProvidersFailedError, TimeoutError):
    """The request's overall deadline (or its cap on attempts) ran out first.

    Attributes:
        limit: what ran out, e.g. ``"deadline 30s"`` or ``"max_attempts 6"``.
    """

    def __init__(
        self,
        model: str | None,
        errors: Mapping[str, BaseException],
        attempts: int,
        limit: str,
    ) -> None:
        self.limit = limit
        super().__init__(
            model,
            errors,
            attempts,
            message=f"{limit} exceeded for model {_model_label(model)}",
        )


class ProviderError(RouterError):
    """An error the router raises about one provider's behaviour.

    Attributes:
        provider: the provider's name.
    """

    def __init__(self, provider: str, message: str) -> None:
        self.provider = provider
        super().__init__(f"provider {provider!r}: {message}")


class ProviderTimeoutError(ProviderError, TimeoutError):
    """The provider did not answer in time.

    Attributes:
        phase: ``"attempt"`` (no response), ``"first_token"`` (no first chunk),
            ``"idle"`` (a stream fell silent) or ``"deadline"`` (the request's deadline ran
            out mid-stream).
        timeout: the limit in seconds.
    """

    def __init__(self, provider: str, phase: str, timeout: float) -> None:
        self.phase = phase
        self.timeout = timeout
        super().__init__(provider, f"{phase} timeout after {timeout:g}s")


class IncompleteStreamError(ProviderError):
    """A provider's stream ended before it finished (e.g. a dropped connection)."""


class PartialStreamError(IncompleteStreamError):
    """A stream broke part-way and resuming it (``streaming.resume: continue``) could not
    complete it: the consumer holds ``partial`` and nothing else, no token twice.

    Raised when the continuation diverged from the text already yielded, or when no
    provider, resume (``max_resumes``) or time was left to continue.

    Attributes:
        partial: the text the consumer was given, all of it.
        error: what broke the stream in the first place (``__cause__`` is what ended the
            last try to continue it).

    Example:
        >>> err = PartialStreamError("a", "Hello wor", ConnectionResetError("reset"), "diverged")
        >>> err.partial, type(err.error).__name__
        ('Hello wor', 'ConnectionResetError')
        >>> str(err)
        "provider 'a': stream broke after 9 characters (ConnectionResetError) and could not \
be resumed: diverged"
    """

    def __init__(self, provider: str, partial: str, error: BaseException, why: str) -> None:
        self.partial = partial
        self.error = error
        super().__init__(
            provider,
            f"stream broke after {len(partial)} characters ({type(error).__name__}) and could "
            f"not be resumed: {why}",
        )


class InvalidProviderOutputError(ProviderError, TypeError):
    """A provider or handler returned something the router cannot turn into a message."""


class InvalidStructuredOutputError(ProviderError):
    """A provider answered, but not with what the schema asks for: that provider's failure.

    Attributes:
        schema: the schema's name.
        raw: the provider's answer (its message), for inspection.
        parsing_error: what the parser or validator raised, if anything.
    """

    def __init__(
        self, provider: str, schema: str, raw: object, parsing_error: BaseException | None
    ) -> None:
        self.schema = schema
        self.raw = raw
        self.parsing_error = parsing_error
        why = _first_line(parsing_error) if parsing_error is not None else "no structured answer"
        super().__init__(provider, f"answer does not match {schema}: {why}")


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = describe(error).splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
