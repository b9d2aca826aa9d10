"""Secrets at rest: sealed with a key derived from MAPPER_MASTER_KEY, rotation keeps old rows
readable, a wrong key is refused in words that show no secret."""

import pytest

from engine.errors import ConfigError
from engine.hosted.crypto import SealedSecretError, SecretBox

KEY = "k" * 40
NEW = "n" * 40


def test_seal_open_and_nothing_in_clear():
    box = SecretBox(KEY)
    sealed = box.seal("ccv-secret-1234")
    assert "ccv-secret-1234" not in sealed and box.seal("ccv-secret-1234") != sealed   # fresh IV
    assert box.open(sealed) == "ccv-secret-1234"


def test_another_key_is_refused_without_showing_anything():
    sealed = SecretBox(KEY).seal("ccv-secret-1234")
    with pytest.raises(SealedSecretError) as err:
        SecretBox(NEW).open(sealed, "shop s1's CCV secret key")
    text = str(err.value)
    assert "shop s1's CCV secret key" in text and "another MAPPER_MASTER_KEY" in text
    assert KEY not in text and NEW not in text and "ccv-secret" not in text
    with pytest.raises(SealedSecretError):                      # a changed row is refused too
        SecretBox(KEY).open(sealed[:-4] + "AAAA")


def test_rotation_keeps_old_rows_and_reseals_under_the_new_key():
    old_row = SecretBox(KEY).seal("licence-XYZ")
    rotating = SecretBox.from_env({"MAPPER_MASTER_KEY": NEW, "MAPPER_MASTER_KEY_OLD": f" {KEY} ,"})
    assert rotating.open(old_row) == "licence-XYZ"
    new_row = rotating.reseal(old_row)
    assert SecretBox(NEW).open(new_row) == "licence-XYZ"        # the old key is no longer needed
    with pytest.raises(SealedSecretError):
        SecretBox(KEY).open(new_row)


@pytest.mark.parametrize("env, words", [
    ({}, "MAPPER_MASTER_KEY is not set"),
    ({"MAPPER_MASTER_KEY": "Wk9-x"}, "MAPPER_MASTER_KEY is too short (5 characters, at least 32)"),
    ({"MAPPER_MASTER_KEY": NEW, "MAPPER_MASTER_KEY_OLD": "Wk9-x"}, "MAPPER_MASTER_KEY_OLD is too short"),
])
def test_missing_or_weak_master_key_is_a_configuration_error(env, words):
    with pytest.raises(ConfigError) as err:
        SecretBox.from_env(env)
    assert words in str(err.value) and err.value.exit_code == 2
    assert "Wk9-x" not in str(err.value) and NEW not in str(err.value)      # the key is never shown
