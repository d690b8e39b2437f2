"""The Deepgram API key, read from Secrets Manager and cached per container for ``max_age_s``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from transcriber.errors import ErrorDetails, RetryableError, configuration_error

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# JSON secrets: the first of these keys that holds a non-empty string is the API key.
JSON_KEYS = ("api_key", "deepgram_api_key")
_CONFIG_ERROR_CODES = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure", "InvalidRequestException"}
)


class ApiKeyProvider:
    """One ``GetSecretValue`` per ``max_age_s`` (Powertools' parameters utility did the same, but
    importing it loads a provider for every parameter store: a cold-start cost for one call)."""

    def __init__(
        self,
        secret_id: str,
        max_age_s: int,
        client: SecretsManagerClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret_id = secret_id
        self._max_age_s = max_age_s
        self._client = client
        self._clock = clock
        self._read: tuple[float, Any] | None = None  # when, and the secret as stored
        self._pending: tuple[float, Future[Any]] | None = None  # a read ``prefetch`` started
        self._reader: ThreadPoolExecutor | None = None

    @property
    def secret_id(self) -> str:
        return self._secret_id

    def prefetch(self) -> None:
        """Start the read ``get`` would make, in the background: on a cold start the object's own
        calls (the idempotency write, the transcript's HEAD) wait on the network meanwhile. Its
        error, if any, is raised by ``get``, classified as ever."""
        now = self._clock()
        if self._pending is None and self._stale(now):
            self._reader = self._reader or ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-key")
            self._pending = (now, self._reader.submit(self._fetch))

    def get(self, *, force_fetch: bool = False) -> str:
        """The key; ``force_fetch`` skips the cache, for a key that may have been rotated."""
        now = self._clock()
        pending, self._pending = self._pending, None
        if force_fetch or self._stale(now):
            # A prefetched read serves the cache's rule (dated when it started), not a rejected key.
            if pending is not None and not force_fetch and now - pending[0] < self._max_age_s:
                self._read = (pending[0], pending[1].result())
            else:
                self._read = (now, self._fetch())
        _, raw = self._read or (now, None)  # set just above when stale
        return parse_secret(self._secret_id, raw)

    def _stale(self, now: float) -> bool:
        return self._read is None or now - self._read[0] >= self._max_age_s

    def _fetch(self) -> Any:
        try:
            answer = self._client.get_secret_value(SecretId=self._secret_id)
        except (ClientError, BotoCoreError) as exc:
            raise self._classify_read_error(exc) from None
        return answer["SecretString"] if "SecretString" in answer else answer.get("SecretBinary")

    def _classify_read_error(self, exc: ClientError | BotoCoreError) -> Exception:
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CONFIG_ERROR_CODES:
                return configuration_error(
                    "secret-unreadable", f"cannot read secret {self._secret_id!r}: {code}"
                )
            return RetryableError(
                ErrorDetails(reason="secrets-manager-error", message=f"reading {self._secret_id!r}: {code}")
            )
        return RetryableError(
            ErrorDetails(
                reason="secrets-manager-unreachable",
                message=f"reading {self._secret_id!r}: {type(exc).__name__}",
            )
        )


def parse_secret(secret_id: str, raw: Any) -> str:
    """Accept a plain-string secret or a JSON object; errors name the secret, never its value."""
    text = _secret_text(secret_id, raw)
    if text.startswith("{"):
        text = _key_in_json(secret_id, text)
    if not text or any(ch.isspace() for ch in text) or not text.isprintable():
        # A key with spaces or control characters would corrupt the Authorization header.
        raise configuration_error("secret-malformed", f"secret {secret_id!r} does not hold a valid API key")
    return text


def _secret_text(secret_id: str, raw: Any) -> str:
    """The secret as text, stripped: a binary secret must be UTF-8, and none may be empty."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise configuration_error(
                "secret-malformed", f"secret {secret_id!r} is binary; store the API key as a string"
            ) from None
    if not isinstance(raw, str) or not raw.strip():
        raise configuration_error("secret-empty", f"secret {secret_id!r} is empty")
    return raw.strip()


def _key_in_json(secret_id: str, text: str) -> str:
    """The API key from a JSON secret: the first non-empty string of ``JSON_KEYS``."""
    try:
        document = json.loads(text)
    except ValueError:
        raise configuration_error(
            "secret-malformed", f"secret {secret_id!r} looks like JSON but does not parse"
        ) from None
    fields = document if isinstance(document, dict) else {}
    key = next(
        (fields[name] for name in JSON_KEYS if isinstance(fields.get(name), str) and fields[name]), None
    )
    if key is None:
        raise configuration_error(
            "secret-malformed",
            f"secret {secret_id!r} is JSON without a non-empty {' or '.join(JSON_KEYS)} field",
        )
    return str(key).strip()
