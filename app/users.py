"""Users, their tiers and API keys, stored in Redis.

An API key is shown once when it is made and only its SHA-256 digest is stored: keys are 256
random bits, so a fast digest cannot be brute-forced and lookup by digest needs no key-by-key
comparison (nothing secret is compared byte by byte, so there is no timing side channel).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass

from redis import Redis

from app.errors import UserAlreadyExists, ValidationFailed

TIERS = ("free", "pro", "enterprise")
KEY_PREFIX = "ytc_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_USERS = "ytcaption:users"
_USER = "ytcaption:user:{}"
_EMAIL_INDEX = "ytcaption:user-email:{}"
_API_KEY = "ytcaption:api-key:{}"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    tier: str
    created_at: float

    def to_dict(self) -> dict:
        return asdict(self)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class UserStore:
    def __init__(self, connection: Redis) -> None:
        self.connection = connection

    def create(self, email: str, tier: str) -> tuple[User, str]:
        """Create a user with one API key; return the user and the key (shown only now)."""
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise ValidationFailed(f"{email!r} is not an email address.")
        if tier not in TIERS:
            raise ValidationFailed(f"Tier must be one of {', '.join(TIERS)}.")
        user = User(id=uuid.uuid4().hex, email=email, tier=tier, created_at=time.time())
        if not self.connection.set(_EMAIL_INDEX.format(email), user.id, nx=True):
            raise UserAlreadyExists(f"A user with email {email!r} already exists.")
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.connection.pipeline() as pipe:
            pipe.hset(_USER.format(user.id), mapping={
                "id": user.id, "email": user.email, "tier": user.tier, "created_at": repr(user.created_at),
            })
            pipe.sadd(_USERS, user.id)
            pipe.set(_API_KEY.format(hash_api_key(api_key)), user.id)
            pipe.execute()
        return user, api_key

    def get(self, user_id: str) -> User | None:
        fields = self.connection.hgetall(_USER.format(user_id))
        if not fields:
            return None
        fields = {key.decode(): value.decode() for key, value in fields.items()}
        return User(id=fields["id"], email=fields["email"], tier=fields["tier"], created_at=float(fields["created_at"]))

    def authenticate(self, api_key: str) -> User | None:
        """Return the user owning ``api_key``, or None."""
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            return None
        user_id = self.connection.get(_API_KEY.format(hash_api_key(api_key)))
        return self.get(user_id.decode()) if user_id else None

    def all(self) -> list[User]:
        users = (self.get(user_id.decode()) for user_id in self.connection.smembers(_USERS))
        return sorted((user for user in users if user), key=lambda user: user.created_at)
