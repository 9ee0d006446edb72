"""Errors raised by application services; the web layer maps each to an HTTP status."""


class ServiceError(Exception):
    """Base class; ``detail`` is safe to show a client."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(ServiceError):
    """The thing does not exist, or the caller may not see it (404)."""


class Conflict(ServiceError):
    """The request conflicts with the current state (409)."""


class Forbidden(ServiceError):
    """The caller's role may not do this (403)."""


class UnknownSku(NotFound):
    def __init__(self, sku: str):
        super().__init__(f"unknown sku {sku!r}")
        self.sku = sku


class TooManyOpenOrders(ServiceError):
    """The customer already has ``limit`` orders that are not final (429, SPEC
    "Availability and abuse": ``MAX_OPEN_ORDERS``)."""

    def __init__(self, limit: int):
        super().__init__(
            f"at most {limit} open orders per customer (MAX_OPEN_ORDERS); "
            "wait until one of yours is completed, cancelled or failed"
        )
        self.limit = limit


class TooManyUnitsHeld(TooManyOpenOrders):
    """The customer's open orders hold ``held`` units and this one asks for
    ``asked`` more, past ``limit`` (429, the security issue's item 3: one account
    cannot hoard the stock: ``MAX_OPEN_UNITS``)."""

    def __init__(self, limit: int, held: int, asked: int):
        ServiceError.__init__(
            self,
            f"at most {limit} units in open orders per customer "
            f"(MAX_OPEN_UNITS); yours hold {held} and this order asks for "
            f"{asked}; wait until one of yours is completed, cancelled or failed",
        )
        self.limit = limit


class TokenRefused(ServiceError):
    """The token's user no longer exists, or logged out everywhere after the
    token was issued (401): what the web layer's user lookup refuses, found by a
    command that reads the user's row itself (``place_order``)."""

    def __init__(self) -> None:
        super().__init__("the token's user no longer exists")
