"""What Orion needs from a payment provider.

Every call carries the caller's idempotency key; a provider answers a repeated
key with the first result and never charges twice (as Stripe's API does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol


class ProviderError(Exception):
    """A call the provider refused for good (not a decline): retrying will not help."""


class TransientProviderError(Exception):
    """The call may succeed if repeated with the same idempotency key."""


class ProviderTimeout(TransientProviderError):
    """No answer in time; the outcome is unknown until the key is replayed."""


class ProviderUnavailable(TransientProviderError):
    """The provider reported a processing error (HTTP 5xx)."""


@dataclass(frozen=True)
class ProviderResult:
    """``approved`` or a decline; ``soft`` declines may succeed with another attempt."""

    approved: bool
    reference: str | None = None
    decline_code: str | None = None
    soft: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "reference": self.reference,
            "decline_code": self.decline_code,
            "soft": self.soft,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderResult:
        return cls(**data)


class PaymentProvider(Protocol):
    def authorize(
        self, key: str, order_ref: str, token: str, amount: Decimal, currency: str
    ) -> ProviderResult: ...

    def capture(self, key: str, authorization_ref: str, amount: Decimal) -> ProviderResult: ...

    def void(self, key: str, authorization_ref: str) -> ProviderResult: ...

    def refund(self, key: str, capture_ref: str, amount: Decimal) -> ProviderResult: ...

    def find(self, key: str) -> ProviderResult | None:
        """The outcome of an earlier call made with ``key``, or None if none arrived
        (as with Stripe, which keeps idempotency keys and their results)."""


@lru_cache(maxsize=1)
def get_provider() -> PaymentProvider:
    """The configured provider (only the sandbox is bundled)."""
    from config import get_settings
    from config.failpoints import ACTIVE
    from payments.sandbox import SandboxProvider

    settings = get_settings()
    provider = SandboxProvider(settings.sandbox_database_url, settings.payment_latency_ms)
    return _WithFailpoints(provider) if ACTIVE else provider


class _WithFailpoints:
    """A provider with the fault suite's failpoints around each call
    (``provider.<call>:before`` and ``:after``, keyed by the idempotency key)."""

    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider

    def authorize(
        self, key: str, order_ref: str, token: str, amount: Decimal, currency: str
    ) -> ProviderResult:
        return _around(
            "authorize", key, lambda: self._provider.authorize(key, order_ref, token, amount, currency)
        )

    def capture(self, key: str, authorization_ref: str, amount: Decimal) -> ProviderResult:
        return _around("capture", key, lambda: self._provider.capture(key, authorization_ref, amount))

    def void(self, key: str, authorization_ref: str) -> ProviderResult:
        return _around("void", key, lambda: self._provider.void(key, authorization_ref))

    def refund(self, key: str, capture_ref: str, amount: Decimal) -> ProviderResult:
        return _around("refund", key, lambda: self._provider.refund(key, capture_ref, amount))

    def find(self, key: str) -> ProviderResult | None:
        return self._provider.find(key)


def _around(name: str, key: str, call: Callable[[], ProviderResult]) -> ProviderResult:
    from config.failpoints import failpoint

    failpoint(f"provider.{name}:before", key)
    result = call()
    failpoint(f"provider.{name}:after", key)
    return result
