"""Users: customers and operators, with argon2 password hashes."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow

CUSTOMER, OPERATOR = "customer", "operator"
# argon2id with OWASP's recommended minimum (Password Storage Cheat Sheet:
# m=19 MiB, t=2, p=1). argon2-cffi's default profile (RFC 9106 low-memory:
# m=64 MiB, t=3, p=4) cost 181 ms of CPU per hash here against 23 ms, and a
# web process that registers and logs in customers spent its cores on it.
# Hashes made with other parameters still verify.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# At most this many hashes at once per process (each takes 19 MiB and a core for
# ~25 ms): a flood of logins or registrations queues here instead of exhausting
# memory; the rate limits in web.auth refuse most of it before it gets here.
HASH_CONCURRENCY = max(2, os.cpu_count() or 1)
_hashing = threading.BoundedSemaphore(HASH_CONCURRENCY)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('customer', 'operator')", name="ck_users_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=CUSTOMER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "Log out everywhere" moves the user to the next generation; a token
    # carries the generation it was issued in (claim ``gen``).
    token_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    @staticmethod
    def normalize_email(email: str) -> str:
        return email.strip().lower()

    def set_password(self, password: str) -> None:
        with _hashing:
            self.password_hash = _hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            with _hashing:
                return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def accepts(self, claims: Mapping[str, Any]) -> bool:
        """False for a token issued before the user last logged out everywhere
        (its ``gen`` claim is an earlier generation; tokens without one are 0)."""
        generation: object = claims.get("gen", 0)
        return generation == self.token_generation

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}
