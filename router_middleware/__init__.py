"""router-middleware: a resilient LLM router inside LangChain pipelines.

Example:
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from router_middleware import ResilientRouter
    >>> router = ResilientRouter({"local": FakeListChatModel(responses=["hello"])})
    >>> router.invoke("hi").content
    'hello'
"""

from typing import TYPE_CHECKING, Any

from ._binding import ProviderTarget
from ._breaker import BreakerState, BreakerTransition, CircuitBreaker
from ._chat_model import RouterChatModel
from ._classification import Classification, ErrorClassifier, ErrorKind, ErrorPolicy
from ._classify import chain_classifiers, default_classifier
from ._clock import Clock, FakeClock, SystemClock
from ._config import (
    BudgetConfig,
    CircuitBreakerConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    RouterConfig,
    TimeoutConfig,
    TokenLimitConfig,
)
from ._config_streaming import StreamingConfig
from ._config_tools import CapabilitiesConfig, StructuredOutputConfig, ToolLoopConfig
from ._errors import (
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    IncompleteStreamError,
    InvalidInputError,
    InvalidProviderOutputError,
    InvalidStructuredOutputError,
    NoProviderAvailableError,
    NoProviderForModelError,
    PartialStreamError,
    ProviderError,
    ProviderTimeoutError,
    RouterError,
    UnknownProviderError,
)
from ._limiter import ProviderLimiter
from ._memory import InMemoryStore
from ._metrics import ProviderMetrics
from ._observe import AttemptEnd, Observer
from ._provider import Provider
from ._quota_headers import ProviderQuota, quota_from_message
from ._retry import BackoffPolicy
from ._router import ResilientRouter
from ._routing import Routing
from ._storage import StateStore
from ._strategies import (
    Candidate,
    CandidateBase,
    CandidateReader,
    CostPriorityRoundRobin,
    LeastBusy,
    LowestLatency,
    RoundRobin,
    SelectionStrategy,
    UsageBased,
    Weighted,
    get_strategy,
    register_strategy,
    strategy_names,
)
from ._tokens import Calibration, TiktokenCounter, TokenCounter, approximate_tokens
from ._types import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from .settings import ProviderSettings, RouterSettings

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # pydantic-settings costs ~20 ms to import; code that never reads the environment
    # through it should not pay that on ``import router_middleware``.
    if name in ("RouterSettings", "ProviderSettings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AllProvidersFailedError",
    "AttemptEnd",
    "BackoffPolicy",
    "BreakerState",
    "BreakerTransition",
    "BudgetConfig",
    "Calibration",
    "Candidate",
    "CandidateBase",
    "CandidateReader",
    "CapabilitiesConfig",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "Classification",
    "Clock",
    "ConfigurationError",
    "CostPriorityRoundRobin",
    "DeadlineExceededError",
    "ErrorClassifier",
    "ErrorKind",
    "ErrorPolicy",
    "FakeClock",
    "InMemoryStore",
    "IncompleteStreamError",
    "InvalidInputError",
    "InvalidProviderOutputError",
    "InvalidStructuredOutputError",
    "LLMRequest",
    "LLMResponse",
    "LeastBusy",
    "LowestLatency",
    "ModelConfig",
    "NoProviderAvailableError",
    "NoProviderForModelError",
    "Observer",
    "PartialStreamError",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderLimiter",
    "ProviderMetrics",
    "ProviderQuota",
    "ProviderSettings",
    "ProviderTarget",
    "ProviderTimeoutError",
    "RateLimitConfig",
    "ResilientRouter",
    "RetryConfig",
    "RoundRobin",
    "RouterChatModel",
    "RouterConfig",
    "RouterError",
    "RouterSettings",
    "Routing",
    "SelectionStrategy",
    "StateStore",
    "StreamingConfig",
    "StructuredOutputConfig",
    "SystemClock",
    "TiktokenCounter",
    "TimeoutConfig",
    "TokenCounter",
    "TokenLimitConfig",
    "ToolLoopConfig",
    "UnknownProviderError",
    "UsageBased",
    "Weighted",
    "__version__",
    "approximate_tokens",
    "chain_classifiers",
    "default_classifier",
    "get_strategy",
    "quota_from_message",
    "register_strategy",
    "strategy_names",
]
