"""Secret hygiene for every test: no API key and no presigned-URL secret may appear in anything the
system under test wrote.

A pytest plugin (``pytest_plugins = ["tests.hygiene"]`` in ``tests/conftest.py``; or ``-p tests.hygiene``).
It learns what the local world does through the hooks of ``localworld.pytest_hooks`` (called by the
world's own plugin, ``localworld.pytest_plugin``), so it never imports the world.

What it registers as secrets (session-wide, so a secret learnt in one test is also looked for in
every later one; values shorter than ``MIN_SECRET_LEN`` are ignored to avoid false positives):

* API keys: every value given to ``LocalAws.create_secret`` (the whole string, and for JSON values
  every string field), every key given to ``DeepgramEmulator`` (constructor and ``api_keys``
  setter, both go through the setter) and ``LocalWorld.api_key``.
* Presigned-URL secrets: from every request any Deepgram emulator logged (``LoggedRequest.json["url"]``),
  ``X-Amz-Signature`` (and SigV2 ``Signature``), ``X-Amz-Security-Token`` and the full
  ``X-Amz-Credential`` (access key id + scope, e.g. ``testing/20260101/us-east-1/s3/aws4_request``:
  unique, and ``redact_url`` promises to remove it). The bare dummy access key id ``testing`` is
  never registered on its own (too short, and it is in every environment).

What it scans (per test; everything appended while the test runs, including results of background
event-delivery threads):

* every ``InvocationResult`` returned by ``LocalFunction.invoke``: log lines, payload, error;
* pytest's captured stdout, stderr and log of setup, call and teardown (``report.sections``);
* every object (body and metadata) in the output bucket of each ``LocalWorld`` the test used,
  read after the test, before ``LocalWorld.reset`` empties it and before its moto server stops.

Each secret is looked for verbatim and URL-encoded (``quote(safe="")``, ``quote`` keeping ``/``,
``quote_plus``, ``quote`` twice and ``quote_plus`` twice, each also with lowercase escapes: see
``encoded_forms``; SigV4 signatures, being hex, are found case-insensitively, even glued to other hex). A hit
fails the test at teardown naming the secret's kind, where it came from and where it was found,
with a sha256 prefix instead of the secret itself. Leaks found outside any test (after the last
one) fail the session.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import pytest

MIN_SECRET_LEN = 12
MAX_OBJECT_BYTES = 2_000_000  # objects bigger than this are scanned up to this size
DUMMY_ACCESS_KEY_IDS = frozenset({"testing", "test", "foobar_key"})
_HEX_RUN = re.compile(r"[0-9a-fA-F]{64,}")
_PERCENT_ESCAPE = re.compile(r"%(?:25)?[0-9A-F]{2}")  # %2F, and %252F as %252f
_SIGNED_PARAM = re.compile(
    r"(?i)(?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=[^&#\s\"'<>]+"
)
MAX_HARVEST_BODY = 256_000  # bigger bodies are audio uploads, not URLs
_PRESIGNED_PARAMS = {
    "x-amz-signature": "presigned-url signature",
    "signature": "presigned-url signature",
    "x-amz-security-token": "presigned-url security token",
    "x-amz-credential": "presigned-url credential",
}


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class Secret:
    kind: str  # "api key", "secret value", "presigned-url signature", ...
    value: str
    origin: str  # where the plugin learnt it, never the value

    def describe(self) -> str:
        return f"{self.kind} ({fingerprint(self.value)}, from {self.origin})"


@dataclass(frozen=True)
class Leak:
    secret: Secret
    form: str  # "verbatim" | "url-encoded" | "url-encoded (plus)" | "url-encoded twice"
    where: str

    def describe(self) -> str:
        form = "" if self.form == "verbatim" else f" [{self.form}]"
        return f"{self.secret.describe()}{form} found in {self.where}"


class Registry:
    """Known secrets and the forms they are searched in. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, Secret] = {}
        # search form -> (secret, form name); SigV4 signatures (64 hex) are looked up by token
        self._literals: dict[str, tuple[Secret, str]] = {}
        self._hex: dict[str, Secret] = {}

    def __len__(self) -> int:
        return len(self._secrets)

    def __contains__(self, value: object) -> bool:
        return value in self._secrets

    def add(self, kind: str, value: Any, origin: str) -> bool:
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return False
        if not isinstance(value, str):
            return False
        for candidate in {value, value.strip()}:
            if len(candidate) < MIN_SECRET_LEN or candidate in DUMMY_ACCESS_KEY_IDS:
                continue
            with self._lock:
                if candidate in self._secrets:
                    continue
                secret = Secret(kind, candidate, origin)
                self._secrets[candidate] = secret
                if len(candidate) == 64 and _HEX_RUN.fullmatch(candidate):
                    self._hex[candidate.lower()] = secret
                    continue
                for text, form in encoded_forms(candidate).items():
                    self._literals.setdefault(text, (secret, form))
        return True

    def add_secret_value(self, value: Any, origin: str) -> None:
        """A Secrets Manager value: the whole value, and each JSON string field in it."""
        self.add("secret value", value, origin)
        text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value
        if isinstance(text, str) and text.strip().startswith("{"):
            try:
                document = json.loads(text)
            except ValueError:
                return
            for field, item in _json_strings(document):
                self.add("api key", item, f"{origin}, JSON field {field!r}")

    def add_presigned_url(self, url: Any, origin: str) -> None:
        if not isinstance(url, str) or "?" not in url:
            return
        try:
            query = parse_qsl(urlsplit(url).query, keep_blank_values=False)
        except ValueError:
            return
        for name, value in query:
            kind = _PRESIGNED_PARAMS.get(name.lower())
            if kind:
                self.add(kind, value, origin)
        # and each as it stands in the URL (percent-encoded once): a quoted URL quotes it again
        for name, _, value in (part.partition("=") for part in urlsplit(url).query.split("&")):
            kind = _PRESIGNED_PARAMS.get(name.lower())
            if kind:
                self.add(kind, value, f"{origin}, as encoded in the URL")

    def scan(self, text: str) -> Iterator[tuple[Secret, str, int]]:
        """(secret, form, offset) for every registered secret in ``text``; one hit per secret/form."""
        if not text:
            return
        with self._lock:
            literals = list(self._literals.items())
            hexes = dict(self._hex)
        for needle, (secret, form) in literals:
            at = text.find(needle)
            if at >= 0:
                yield secret, form, at
        if hexes:
            seen: set[str] = set()
            for match in _HEX_RUN.finditer(text):
                run = match.group().lower()
                for start in range(len(run) - 63):
                    found = hexes.get(run[start : start + 64])
                    if found is not None and found.value not in seen:
                        seen.add(found.value)
                        yield found, "verbatim", match.start() + start

    def redact(self, text: str) -> str:
        """``text`` with every registered secret (in any searched form) replaced by its fingerprint."""
        for secret, form, _ in list(self.scan(text)):
            needle = encoded_forms(secret.value, by_name=True).get(form, secret.value)
            marker = f"<{secret.kind} {fingerprint(secret.value)}>"
            text = re.sub(re.escape(needle), marker, text, flags=re.IGNORECASE)
        return text


def encoded_forms(value: str, *, by_name: bool = False) -> dict[str, str]:
    """text -> form name for every form a secret is searched in: verbatim, percent-encoded (every
    reserved character, or all but ``/``), ``+``-encoded, each of those twice, and each with
    lowercase percent escapes (``%2f``); ``by_name`` turns it into form name -> text."""
    once = quote(value, safe="")
    named = {
        "verbatim": value,
        "url-encoded": once,
        "url-encoded (path)": quote(value),
        "url-encoded (plus)": quote_plus(value),
        "url-encoded twice": quote(once, safe=""),
        "url-encoded (plus) twice": quote_plus(quote_plus(value)),
    }
    for name, text in list(named.items()):
        named[f"{name}, lowercase escapes"] = _PERCENT_ESCAPE.sub(lambda m: m.group().lower(), text)
    if by_name:
        return named
    forms: dict[str, str] = {}
    for name, text in named.items():
        forms.setdefault(text, name)
    return forms


def _json_strings(document: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(document, str):
        yield path, document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield from _json_strings(value, f"{path}.{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _json_strings(value, f"{path}[{index}]")


def _locate(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}" if "\n" in text else f"offset {offset}"


class Collector:
    """Texts written by the system under test, waiting to be scanned. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        if text:
            with self._lock:
                self._texts.append((where, text))

    def drain(self) -> list[tuple[str, str]]:
        with self._lock:
            texts, self._texts = self._texts, []
        return texts


def find_leaks(registry: Registry, texts: Iterable[tuple[str, str]]) -> list[Leak]:
    leaks: list[Leak] = []
    for where, text in texts:
        for secret, form, offset in registry.scan(text):
            leaks.append(Leak(secret, form, f"{where} ({_locate(text, offset)})"))
    return leaks


def leak_report(leaks: list[Leak], limit: int = 20) -> str:
    lines = [f"secret hygiene: {len(leaks)} secret(s) written where they must never appear:"]
    lines += [f"  - {leak.describe()}" for leak in leaks[:limit]]
    if len(leaks) > limit:
        lines.append(f"  ... and {len(leaks) - limit} more")
    lines.append("(secrets are shown as sha256 prefixes; see tests/hygiene.py)")
    return "\n".join(lines)


# --- the plugin's state and the hooks into the local world -----------------------------------------


class Hygiene:
    def __init__(self) -> None:
        self.registry = Registry()
        self.pending = Collector()
        # LocalWorld is an unhashable dataclass: track objects by id, through weak references
        self.worlds: dict[int, weakref.ref[Any]] = {}
        self.emulators: dict[int, weakref.ref[Any]] = {}
        self.touched: set[int] = set()  # ids of worlds used since the last check
        self._lock = threading.Lock()
        self.invocations = 0
        self.checks = 0
        self.texts = 0
        self.seconds = 0.0  # spent checking, for -v's summary line
        self.session_leaks: list[Leak] = []

    @staticmethod
    def live(refs: dict[int, weakref.ref[Any]]) -> list[Any]:
        objects = [ref() for ref in list(refs.values())]
        return [obj for obj in objects if obj is not None]

    def track_world(self, world: Any) -> None:
        with self._lock:
            self.worlds[id(world)] = weakref.ref(world)
            self.touched.add(id(world))

    # -- collecting -----------------------------------------------------------------------------

    def record_invocation(self, function: Any, result: Any) -> None:
        self.invocations += 1
        spec = getattr(function, "spec", None)
        name = getattr(spec, "logical_id", None) or "function"
        where = f"invocation of {name} (request {getattr(result, 'request_id', '?')})"
        self.pending.add(f"{where}: logs", "\n".join(str(line) for line in result.logs or []))
        if result.payload is not None:
            self.pending.add(f"{where}: payload", json.dumps(result.payload, default=str))
        if result.error is not None:
            self.pending.add(f"{where}: error", json.dumps(result.error, default=str))

    def harvest(self, emulator: Any) -> None:
        """Register the presigned-URL secrets of every request the emulator logged."""
        try:
            logged = emulator.requests
        except Exception:
            return
        with self._lock:
            done = emulator.__dict__.setdefault("_hygiene_harvested", set())
            fresh = [r for r in logged if r.request_id not in done]
            done.update(r.request_id for r in fresh)
        for request in fresh:
            body = request.json
            if isinstance(body, dict):
                self.registry.add_presigned_url(body.get("url"), "a URL sent to the Deepgram emulator")
                self.registry.add_presigned_url(body.get("callback"), "a callback URL")
            elif len(request.body or b"") <= MAX_HARVEST_BODY:
                # not parsed as JSON (e.g. no Content-Type): take signed parameters from the raw body
                text = (request.body or b"").decode("utf-8", "replace")
                for match in _SIGNED_PARAM.finditer(text):
                    self.registry.add_presigned_url(
                        "?" + match.group(), "a request body sent to the Deepgram emulator"
                    )
            for name, value in request.query:
                if name == "callback":
                    self.registry.add_presigned_url(value, "a callback URL")

    def harvest_all(self) -> None:
        for emulator in self.live(self.emulators):
            self.harvest(emulator)

    def scan_world(self, world: Any) -> None:
        """Queue every new object of the world's output bucket (body and metadata)."""
        if getattr(world.moto, "_endpoint_url", None) is None:
            return  # moto is not running
        try:
            bucket = world.output_bucket
            s3 = world.aws.s3()
            paginator = s3.get_paginator("list_objects_v2")
            seen = world.__dict__.setdefault("_hygiene_scanned", set())
            for page in paginator.paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    marker = (item["Key"], str(item.get("ETag")), str(item.get("LastModified")))
                    if marker in seen:
                        continue
                    seen.add(marker)
                    obj = s3.get_object(Bucket=bucket, Key=item["Key"])
                    body = obj["Body"].read(MAX_OBJECT_BYTES)
                    where = f"s3://{bucket}/{item['Key']}"
                    self.pending.add(f"{where} body", body.decode("utf-8", "replace"))
                    self.pending.add(f"{where} metadata", json.dumps(obj.get("Metadata", {})))
        except Exception:  # noqa: S110 - bucket deleted or AWS faulted by the test: nothing to read
            pass

    # -- checking -------------------------------------------------------------------------------

    def check(self, extra: Iterable[tuple[str, str]] = ()) -> list[Leak]:
        started = time.perf_counter()
        self.harvest_all()
        with self._lock:
            touched, self.touched = self.touched, set()
        for world in self.live(self.worlds):
            if id(world) in touched:
                self.scan_world(world)
        texts = [*self.pending.drain(), *extra]
        leaks = find_leaks(self.registry, texts)
        self.checks += 1
        self.texts += len(texts)
        self.seconds += time.perf_counter() - started
        return leaks


_HYGIENE: Hygiene | None = None


def current() -> Hygiene | None:
    """The running plugin's state (None when the plugin is not active)."""
    return _HYGIENE


def pytest_configure(config: pytest.Config) -> None:
    global _HYGIENE  # noqa: PLW0603 - one plugin state per session
    if _HYGIENE is None:
        _HYGIENE = Hygiene()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _HYGIENE  # noqa: PLW0603
    _HYGIENE = None


# --- what the local world reports (localworld.pytest_hooks; optional: absent without the world) ---


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_secret_stored(name: str, value: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.registry.add_secret_value(value, f"LocalAws.create_secret({name!r})")


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_api_keys_set(keys: list[str]) -> None:
    if _HYGIENE is not None:
        for key in keys:
            _HYGIENE.registry.add("api key", key, "DeepgramEmulator.api_keys")


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_emulator_started(emulator: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.emulators[id(emulator)] = weakref.ref(emulator)


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_emulator_resetting(emulator: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.harvest(emulator)  # the log is about to be cleared


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_world_created(world: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.registry.add("api key", world.api_key, "LocalWorld.api_key")
        _HYGIENE.track_world(world)


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_world_resetting(world: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.registry.add("api key", world.api_key, "LocalWorld.api_key")
        _HYGIENE.track_world(world)
        _HYGIENE.harvest(world.emulator)
        _HYGIENE.scan_world(world)  # before the outputs are emptied


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_moto_stopping(moto: Any) -> None:
    if _HYGIENE is not None:
        for world in _HYGIENE.live(_HYGIENE.worlds):
            if world.moto is moto:
                _HYGIENE.harvest(world.emulator)
                _HYGIENE.scan_world(world)


@pytest.hookimpl(optionalhook=True)
def pytest_localworld_invoked(function: Any, result: Any) -> None:
    if _HYGIENE is not None:
        _HYGIENE.record_invocation(function, result)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome: Any = yield
    hygiene = _HYGIENE
    if hygiene is None or call.when != "teardown":
        return
    report: pytest.TestReport = outcome.get_result()
    funcargs = getattr(item, "funcargs", None) or {}
    for value in funcargs.values():
        if id(value) in hygiene.worlds:
            hygiene.touched.add(id(value))
    # report.sections holds the captured output of setup, call and teardown
    captured = [(f"pytest {title.lower()}", content) for title, content in report.sections]
    leaks = hygiene.check(captured)
    if leaks:
        report.outcome = "failed"
        report.longrepr = leak_report(leaks)
        # pytest shows the captured output of a failed phase: never with the secret in it
        report.sections = [(title, hygiene.registry.redact(text)) for title, text in report.sections]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # session-scoped worlds are torn down after the last test's report: check what they left
    hygiene = _HYGIENE
    if hygiene is None:
        return
    leaks = hygiene.check()
    if leaks:
        hygiene.session_leaks = leaks
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(leak_report(leaks), red=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    hygiene = _HYGIENE
    if hygiene is not None and config.option.verbose > 0:
        terminalreporter.write_line(
            f"secret hygiene: {hygiene.checks} checks, {len(hygiene.registry)} secrets known, "
            f"{hygiene.texts} texts scanned ({hygiene.invocations} invocations), "
            f"{hygiene.seconds:.2f} s spent checking"
        )


@pytest.fixture(autouse=True)
def secret_hygiene() -> Hygiene | None:
    """Every test is checked by the hooks above; request this fixture to register extra secrets
    (``secret_hygiene.registry.add("api key", value, "where")``)."""
    return _HYGIENE
