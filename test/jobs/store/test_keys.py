"""API keys in the store, on both backends: stored only as a hash, found by it, revoked at once."""

from __future__ import annotations

import pytest

from harli_sgl.jobs import keys


def test_a_key_is_stored_only_as_its_hash(store):
    made = store.create_key("alpha", "ci")
    secret = made.secret
    assert secret.startswith(keys.KEY_PREFIX) and len(secret) >= 40
    assert made.key["tenant"] == "alpha" and made.key["name"] == "ci"
    assert made.key["hint"] == "..." + secret[-4:] and "key" not in made.key
    with store._db.read() as tx:
        rows = [dict(r) for r in tx.all("SELECT * FROM api_keys")]
    assert len(rows) == 1 and rows[0]["key_hash"] == keys.key_hash(secret)
    assert not any(secret in str(v) or secret[3:-4] in str(v) for v in rows[0].values())
    assert store.tenant_of_key(secret) == "alpha"
    assert store.get_tenant("alpha")["id"] == "alpha"  # the key made its tenant


def test_keys_are_listed_without_secrets_and_revoked_at_once(make_store):
    store, other_instance = make_store(), make_store()
    a1, a2, b = store.create_key("alpha"), store.create_key("alpha"), store.create_key("beta")
    assert [k["id"] for k in store.list_keys()] == [b.key["id"], a2.key["id"], a1.key["id"]]
    assert [k["id"] for k in store.list_keys("alpha")] == [a2.key["id"], a1.key["id"]]
    assert store.has_live_keys()
    revoked = store.revoke_key(a1.key["id"])
    assert revoked["revoked_at"] is not None
    # Nothing caches a lookup: the other process (or instance) refuses it from now on.
    assert other_instance.tenant_of_key(a1.secret) is None
    assert other_instance.tenant_of_key(a2.secret) == "alpha"
    assert store.revoke_key(a1.key["id"])["revoked_at"] == revoked["revoked_at"]
    assert store.revoke_key("key-" + "0" * 24) is None and store.revoke_key("../x") is None
    for k in (a2, b):
        store.revoke_key(k.key["id"])
    assert not store.has_live_keys()


@pytest.mark.parametrize("guess", ["", "hk-", "x" * 100, "' OR 1=1 --", "\udcff"])
def test_anything_but_a_live_key_names_no_tenant(store, guess):
    store.create_key("alpha")
    assert store.tenant_of_key(guess) is None


@pytest.mark.parametrize("tenant", ["", "Upper", "a:b", "a/b", "-x", "x" * 33, None])
def test_tenant_ids_are_checked(store, tenant):
    with pytest.raises(ValueError, match="tenant id"):
        store.create_key(tenant)
