import threading

import pytest
from botocore.exceptions import ClientError

from transcriber.errors import ConfigurationError
from transcriber.services.secrets import parse_secret

KEY = "dg_0123456789abcdef"


@pytest.mark.parametrize(
    "raw",
    [
        KEY,
        f"  {KEY}\n",
        f'{{"api_key": "{KEY}"}}',
        f'{{"deepgram_api_key": "{KEY}", "note": "x"}}',
        KEY.encode(),
    ],
)
def test_plain_and_json_secrets_give_the_key(raw: str | bytes) -> None:
    assert parse_secret("deepgram/dev", raw) == KEY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (None, "is empty"),
        (b"\xff\xfe\x00", "is binary"),
        ('{"api_key": ', "does not parse"),
        ('{"key": "dg_secretvalue"}', "without a non-empty api_key or deepgram_api_key"),
        ('{"api_key": ""}', "without a non-empty"),
        ("two words", "does not hold a valid API key"),
    ],
)
def test_bad_secrets_are_named_but_never_echoed(raw: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_secret("deepgram/dev", raw)

    assert "deepgram/dev" in str(caught.value)
    assert "dg_secretvalue" not in str(caught.value)
    if isinstance(raw, str) and raw.strip():
        assert raw not in str(caught.value)


class _Secrets:
    """A Secrets Manager client that counts its reads."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.reads = 0

    def get_secret_value(self, SecretId: str) -> dict[str, object]:
        self.reads += 1
        return {"Name": SecretId, "SecretString": self.value}


def test_the_key_is_read_again_once_its_max_age_has_passed() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    now = [100.0]
    client = _Secrets(KEY)
    provider = ApiKeyProvider("deepgram/dev", 300, client, clock=lambda: now[0])  # type: ignore[arg-type]

    assert provider.get() == KEY
    now[0] += 299
    assert provider.get() == KEY
    assert client.reads == 1
    now[0] += 1
    client.value = "dg_rotated0123456789"
    assert provider.get() == "dg_rotated0123456789"
    assert client.reads == 2


def test_a_malformed_secret_is_not_read_again_on_every_call() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    client = _Secrets("two words")
    provider = ApiKeyProvider("deepgram/dev", 300, client)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(ConfigurationError, match="does not hold a valid API key"):
            provider.get()

    assert client.reads == 1


class _HeldSecrets(_Secrets):
    """Reads wait until ``release`` is set, and note the thread they ran on."""

    def __init__(self, value: object) -> None:
        super().__init__(value)
        self.release = threading.Event()
        self.answered = threading.Event()
        self.threads: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, object]:
        self.threads.append(threading.current_thread().name)
        assert self.release.wait(timeout=5)
        if isinstance(self.value, Exception):
            raise self.value
        answer = super().get_secret_value(SecretId)
        self.answered.set()
        return answer


def test_a_prefetch_reads_in_the_background_and_get_takes_that_read() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    client = _HeldSecrets(KEY)
    provider = ApiKeyProvider("deepgram/dev", 300, client)  # type: ignore[arg-type]

    provider.prefetch()  # returns while the read is still held
    client.release.set()

    assert provider.get() == KEY
    assert client.reads == 1
    assert client.threads == ["api-key_0"]  # the prefetch's thread, not this one


def test_a_prefetch_reads_nothing_while_the_cached_key_is_fresh() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    client = _Secrets(KEY)
    provider = ApiKeyProvider("deepgram/dev", 300, client)  # type: ignore[arg-type]
    provider.get()
    provider.prefetch()
    provider.get()

    assert client.reads == 1


def test_a_prefetched_reads_error_is_raised_by_get_classified() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    missing = ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "no"}}, "GetSecretValue")
    client = _HeldSecrets(missing)
    client.release.set()
    provider = ApiKeyProvider("deepgram/dev", 300, client)  # type: ignore[arg-type]
    provider.prefetch()

    with pytest.raises(ConfigurationError, match="cannot read secret 'deepgram/dev'"):
        provider.get()


def test_a_forced_read_does_not_take_a_prefetched_key() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    client = _HeldSecrets(KEY)
    client.release.set()
    provider = ApiKeyProvider("deepgram/dev", 300, client)  # type: ignore[arg-type]
    provider.prefetch()
    assert client.answered.wait(timeout=5)
    client.value = "dg_rotated0123456789"  # the prefetch read the key Deepgram has since rejected

    assert provider.get(force_fetch=True) == "dg_rotated0123456789"


def test_a_prefetched_read_older_than_the_max_age_is_not_used() -> None:
    from transcriber.services.secrets import ApiKeyProvider

    now = [100.0]
    client = _HeldSecrets(KEY)
    client.release.set()
    provider = ApiKeyProvider("deepgram/dev", 300, client, clock=lambda: now[0])  # type: ignore[arg-type]
    provider.prefetch()  # an invocation that never needed the key (a replay, say)
    assert client.answered.wait(timeout=5)
    client.value = "dg_rotated0123456789"
    now[0] += 300

    assert provider.get() == "dg_rotated0123456789"
    assert client.reads == 2
