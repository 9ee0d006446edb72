"""The payment provider port and its bundled sandbox."""

from payments.provider import (
    PaymentProvider,
    ProviderError,
    ProviderResult,
    ProviderTimeout,
    ProviderUnavailable,
    TransientProviderError,
    get_provider,
)

__all__ = [
    "PaymentProvider",
    "ProviderError",
    "ProviderResult",
    "ProviderTimeout",
    "ProviderUnavailable",
    "TransientProviderError",
    "get_provider",
]
