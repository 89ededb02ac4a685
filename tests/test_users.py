"""The user store, on fakeredis (pure store logic) and on the real server."""

import fakeredis
import pytest

from app.core.errors import UserAlreadyExists, ValidationFailed
from app.core.users import UserStore, hash_api_key


@pytest.fixture(params=["fakeredis", "redis-server"])
def store(request):
    if request.param == "fakeredis":
        return UserStore(fakeredis.FakeRedis())
    return UserStore(request.getfixturevalue("redis"))


def test_create_and_authenticate(store):
    user, key = store.create("Alice@Example.com", "pro")
    assert key.startswith("ytc_") and len(key) > 40
    assert store.authenticate(key)[:2] == (user, store.keys(user.id)[0].key_id)
    assert (user.email, user.tier) == ("alice@example.com", "pro")


def test_only_the_hash_of_the_key_is_stored(store):
    _, key = store.create("bob@example.com", "free")
    connection = store.connection
    everything = b"".join(
        connection.dump(name) or b"" for name in connection.scan_iter()
    ) + b"".join(connection.scan_iter())
    assert key.encode() not in everything
    assert hash_api_key(key).encode() in everything


@pytest.mark.parametrize("key", ["", "ytc_", "ytc_wrong", "nope", "ytc_" + "x" * 500])
def test_wrong_keys_authenticate_nobody(store, key):
    store.create("carol@example.com", "free")
    assert store.authenticate(key) is None


def test_email_is_unique(store):
    store.create("dan@example.com", "free")
    with pytest.raises(UserAlreadyExists):
        store.create("DAN@example.com", "pro")


@pytest.mark.parametrize("email, tier", [("not-an-email", "free"), ("eve@example.com", "platinum")])
def test_bad_email_or_tier(store, email, tier):
    with pytest.raises(ValidationFailed):
        store.create(email, tier)
