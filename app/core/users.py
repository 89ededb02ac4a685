"""Users, their tiers, roles and API keys, stored in Redis.

An API key is shown once when it is made and only its SHA-256 digest is stored: keys are 256
random bits, so a fast digest cannot be brute-forced, and lookup by digest means no secret is
ever compared byte by byte (the digest found is still checked with ``hmac.compare_digest``).
A user may hold several keys; each has a public ``key_id`` to list and revoke it by.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass
from typing import NamedTuple

from redis import Redis
from redis.exceptions import OutOfMemoryError

from app.core.errors import NotFound, UserAlreadyExists, ValidationFailed

log = logging.getLogger(__name__)

TIERS = ("free", "pro", "enterprise")
ROLES = ("user", "admin")
KEY_PREFIX = "ytc_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_USERS = "ytcaption:users"
_USER = "ytcaption:user:{}"
_USER_KEYS = "ytcaption:user:{}:keys"
_EMAIL_INDEX = "ytcaption:user-email:{}"
_API_KEY = "ytcaption:api-key:{}"
_KEY_OWNER = "ytcaption:key-owner:{}"

# The submit fast path's first round trip: the key's record, its user's fields and (when a
# counter prefix is given) the request counted against the key for the rate limit. The script
# builds the user's and the counter's key names itself, which one Redis allows (Redis Cluster,
# which ytcaption does not use, would not).
_AUTHENTICATE = """
local record = redis.call('GET', KEYS[1])
if not record then
  return false
end
local key = cjson.decode(record)
local fields = redis.call('HGETALL', ARGV[1] .. key['user_id'])
local count = 0
if ARGV[2] ~= '' then
  local counter = ARGV[2] .. key['key_id']
  count = redis.call('INCR', counter)
  if count == 1 then
    redis.call('EXPIRE', counter, ARGV[3])
  end
end
return {record, fields, count}
"""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    tier: str
    role: str = "user"
    quota: int | None = None  # jobs per month; None: the tier's default
    created_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    user_id: str
    hint: str  # the first characters, to recognise a key in a list
    created_at: float


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Authenticated(NamedTuple):
    user: User
    key_id: str
    #: Requests made with this key in the rate limiter's window, this one included (0: not counted).
    requests: int = 0


class UserStore:
    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._authenticate = connection.register_script(_AUTHENTICATE)

    # --- users ------------------------------------------------------------------------------

    def create(self, email: str, tier: str, role: str = "user", quota: int | None = None) -> tuple[User, str]:
        """Create a user with one API key; return the user and the key (shown only now)."""
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise ValidationFailed(f"{email!r} is not an email address.")
        _check(tier=tier, role=role, quota=quota)
        user = User(id=uuid.uuid4().hex, email=email, tier=tier, role=role, quota=quota, created_at=time.time())
        if not self.connection.set(_EMAIL_INDEX.format(email), user.id, nx=True):
            raise UserAlreadyExists(f"A user with email {email!r} already exists.")
        with self.connection.pipeline() as pipe:
            pipe.hset(_USER.format(user.id), mapping=_fields(user))
            pipe.sadd(_USERS, user.id)
            pipe.execute()
        return user, self.issue_key(user.id)

    def get(self, user_id: str) -> User | None:
        return _user(self.connection.hgetall(_USER.format(user_id)))

    def find(self, id_or_email: str) -> User:
        """The user with this id or email; ``NotFound`` otherwise."""
        user_id = self.connection.get(_EMAIL_INDEX.format(id_or_email.strip().lower()))
        user = self.get(user_id.decode() if user_id else id_or_email)
        if user is None:
            raise NotFound(f"No user {id_or_email!r}.")
        return user

    def update(self, user: User, *, tier: str | None = None, role: str | None = None,
               quota: int | None | str = "keep") -> User:
        """Change tier, role or quota override (``quota=None`` returns to the tier's default)."""
        changed = User(id=user.id, email=user.email, tier=tier or user.tier, role=role or user.role,
                       quota=user.quota if quota == "keep" else quota, created_at=user.created_at)
        _check(tier=changed.tier, role=changed.role, quota=changed.quota)
        self.connection.hset(_USER.format(user.id), mapping=_fields(changed))
        return changed

    def all(self) -> list[User]:
        users = (self.get(user_id.decode()) for user_id in self.connection.smembers(_USERS))
        return sorted((user for user in users if user), key=lambda user: user.created_at)

    # --- keys -------------------------------------------------------------------------------

    def issue_key(self, user_id: str) -> str:
        """A new API key for ``user_id``; only its digest is kept."""
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_api_key(api_key)
        key = ApiKey(key_id="key_" + secrets.token_hex(6), user_id=user_id, hint=api_key[:8] + "…",
                     created_at=time.time())
        record = json.dumps({**asdict(key), "digest": digest})
        with self.connection.pipeline() as pipe:
            pipe.set(_API_KEY.format(digest), record)
            pipe.hset(_USER_KEYS.format(user_id), key.key_id, record)
            pipe.set(_KEY_OWNER.format(key.key_id), user_id)
            pipe.execute()
        return api_key

    def keys(self, user_id: str) -> list[ApiKey]:
        records = (json.loads(raw) for raw in self.connection.hvals(_USER_KEYS.format(user_id)))
        keys = [ApiKey(**{k: v for k, v in r.items() if k != "digest"}) for r in records]
        return sorted(keys, key=lambda key: key.created_at)

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key by its public id: from now on it authenticates nobody."""
        owner = self.connection.get(_KEY_OWNER.format(key_id))
        raw = self.connection.hget(_USER_KEYS.format(owner.decode()), key_id) if owner else None
        if not raw:
            raise NotFound(f"No API key {key_id!r}.")
        record = json.loads(raw)
        with self.connection.pipeline() as pipe:
            pipe.delete(_API_KEY.format(record.pop("digest")), _KEY_OWNER.format(key_id))
            pipe.hdel(_USER_KEYS.format(owner.decode()), key_id)
            pipe.execute()
        return ApiKey(**record)

    def authenticate(self, api_key: str, *, counter_prefix: str = "", counter_ttl: int = 0) -> Authenticated | None:
        """The user owning ``api_key`` and the key's id, or None; one round trip to Redis.

        With ``counter_prefix``, the request is also counted in ``<counter_prefix><key_id>``
        (expiring after ``counter_ttl`` s), for the rate limiter.
        """
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            return None
        digest = hash_api_key(api_key)
        try:
            found = self._authenticate(keys=[_API_KEY.format(digest)],
                                       args=[_USER.format(""), counter_prefix, counter_ttl])
        except OutOfMemoryError:
            # Redis is full and refuses the script (it may write the counter): authenticate with
            # reads alone and count nothing, so that reading a status still works meanwhile.
            log.warning("Redis is out of memory: requests are not counted for the rate limit")
            found = self._read_key(digest)
        if not found:
            return None
        raw, fields, requests = found
        record = json.loads(raw)
        user = _user(dict(zip(fields[::2], fields[1::2])))
        if user is None or not hmac.compare_digest(record["digest"], digest):
            return None
        return Authenticated(user, record["key_id"], int(requests))

    def _read_key(self, digest: str) -> tuple[bytes, list[bytes], int] | None:
        """What the authentication script returns, read with plain reads, the request not counted."""
        raw = self.connection.get(_API_KEY.format(digest))
        if raw is None:
            return None
        fields = self.connection.hgetall(_USER.format(json.loads(raw)["user_id"]))
        return raw, [item for pair in fields.items() for item in pair], 0


def _check(*, tier: str, role: str, quota: int | None) -> None:
    if tier not in TIERS:
        raise ValidationFailed(f"Tier must be one of {', '.join(TIERS)}.")
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}.")
    if quota is not None and quota < 0:
        raise ValidationFailed("A quota is a number of jobs per month, zero or more.")


def _user(fields: dict[bytes, bytes]) -> User | None:
    if not fields:
        return None
    fields = {key.decode(): value.decode() for key, value in fields.items()}
    quota = fields.get("quota", "")
    return User(id=fields["id"], email=fields["email"], tier=fields["tier"], role=fields.get("role", "user"),
                quota=int(quota) if quota else None, created_at=float(fields["created_at"]))


def _fields(user: User) -> dict[str, str]:
    return {"id": user.id, "email": user.email, "tier": user.tier, "role": user.role,
            "quota": "" if user.quota is None else str(user.quota), "created_at": repr(user.created_at)}
