"""The proxy that gives Deepgram's regional hostnames a local answer: only Deepgram's hosts on 443 are
tunnelled to the emulator, the TLS inside the tunnel is verified for the hostname the client asked
for, and every other destination or method is refused."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import certifi
import pytest
import requests

from localworld.deepgram import DeepgramEmulator
from localworld.deepgram.tls import DEEPGRAM_HOSTS
from localworld.deepgram_proxy import NO_PROXY, DeepgramProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(deepgram_emulator: DeepgramEmulator) -> Iterator[DeepgramProxy]:
    with DeepgramProxy(("127.0.0.1", deepgram_emulator.port)) as running:
        yield running


def listen(
    host: str, proxy: DeepgramProxy, key: str, body: bytes, verify: str, model: str = "nova-3"
) -> requests.Response:
    return requests.post(
        f"https://{host}/v1/listen?model={model}",
        data=body,
        headers={"Authorization": f"Token {key}", "Content-Type": "audio/wav"},
        proxies={"https": proxy.url},
        verify=verify,
        timeout=60,
    )


@pytest.mark.parametrize("host", DEEPGRAM_HOSTS)
def test_each_deepgram_host_reaches_the_emulator_with_its_name_verified(
    host: str,
    deepgram_emulator: DeepgramEmulator,
    proxy: DeepgramProxy,
    deepgram_api_key: str,
    sample_wav: bytes,
) -> None:
    response = listen(host, proxy, deepgram_api_key, sample_wav, str(deepgram_emulator.ca_bundle))

    assert response.status_code == 200, response.text
    [request] = deepgram_emulator.requests
    assert (request.headers["Host"], request.server_name) == (host, host)
    assert [(t.host, t.port, t.status) for t in proxy.tunnels] == [(host, 443, 200)]


def test_a_client_that_trusts_only_public_cas_refuses_the_emulator(
    deepgram_emulator: DeepgramEmulator, proxy: DeepgramProxy, deepgram_api_key: str, sample_wav: bytes
) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        listen("api.eu.deepgram.com", proxy, deepgram_api_key, sample_wav, certifi.where())
    assert deepgram_emulator.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "example.com:443",
        "api.deepgram.com:80",
        "api.deepgram.com.example.com:443",
        "127.0.0.1:443",
        "nonsense",
    ],
)
def test_any_other_destination_is_refused(target: str, proxy: DeepgramProxy) -> None:
    connection = http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=5)
    connection.request("CONNECT", target)
    response = connection.getresponse()

    assert response.status == 403
    assert [t.status for t in proxy.tunnels] == [403]


def test_only_connect_is_served(proxy: DeepgramProxy) -> None:
    response = requests.get("http://api.deepgram.com/v1/listen", proxies={"http": proxy.url}, timeout=5)

    assert response.status_code == 405
    assert proxy.tunnels == []


def test_the_environment_it_gives_keeps_loopback_direct(proxy: DeepgramProxy) -> None:
    assert proxy.env() == {"HTTPS_PROXY": proxy.url, "NO_PROXY": NO_PROXY}
    assert requests.utils.should_bypass_proxies("https://127.0.0.1:8443/v1/listen", no_proxy=NO_PROXY)
    assert not requests.utils.should_bypass_proxies(
        "https://api.eu.deepgram.com/v1/listen", no_proxy=NO_PROXY
    )


def test_a_tunnel_to_an_emulator_that_does_not_answer_is_recorded_as_the_502_it_got() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with DeepgramProxy(("127.0.0.1", port)) as down:
        connection = http.client.HTTPConnection(down.url.removeprefix("http://"), timeout=5)
        connection.request("CONNECT", "api.eu.deepgram.com:443")

        assert connection.getresponse().status == 502
        assert [t.status for t in down.tunnels] == [502]


@pytest.mark.parametrize(("host", "status"), [("api.eu.deepgram.com", 403), ("api.deepgram.com", 200)])
def test_whisper_is_refused_where_the_region_does_not_offer_it(
    host: str,
    status: int,
    deepgram_emulator: DeepgramEmulator,
    proxy: DeepgramProxy,
    deepgram_api_key: str,
    sample_wav: bytes,
) -> None:
    verify = str(deepgram_emulator.ca_bundle)
    response = listen(host, proxy, deepgram_api_key, sample_wav, verify, model="whisper-large")

    assert response.status_code == status, response.text
