"""Users: customers and operators, with argon2 password hashes."""
from __future__ import annotations

from datetime import datetime

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


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('customer', 'operator')", name="ck_users_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=CUSTOMER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @staticmethod
    def normalize_email(email: str) -> str:
        return email.strip().lower()

    def set_password(self, password: str) -> None:
        self.password_hash = _hasher.hash(password)

    def check_password(self, password: str) -> bool:
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def to_dict(self) -> dict:
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}
