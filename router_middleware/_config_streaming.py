"""Configuration of streams: whether one that breaks part-way resumes on another provider.

By default (``resume: off``) a stream that fails after its first chunk raises: the chunks
already yielded are never repeated nor silently cut short. With ``resume: continue`` the
router asks the next candidate for the rest of the same answer, at most ``max_resumes``
times per request (see ``_resume`` and ``_relay``). A call may set both for itself with
``streaming={"resume": "continue"}`` (a keyword argument or a ``configurable`` key).

Example:
    >>> cfg = StreamingConfig(resume="continue")
    >>> cfg.resume, cfg.max_resumes
    ('continue', 1)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._config_base import ConfigModel

__all__ = ["ResumeMode", "StreamingConfig"]

ResumeMode = Literal["off", "continue"]


class StreamingConfig(ConfigModel):
    """Streams that break after their first chunk (resuming is off by default)."""

    resume: ResumeMode = Field(
        "off",
        description="`continue`: a stream that breaks part-way goes on with the next provider "
        "(never repeating a token); `off`: it raises.",
    )
    max_resumes: int = Field(
        1, ge=0, le=100, description="The most times one stream may resume on another provider."
    )
