"""TLS material: a local CA (made with trustme) and a server certificate it signs.

Clients trust the emulator by pointing ``REQUESTS_CA_BUNDLE`` (or ``SSL_CERT_FILE``) at
the CA PEM. The certificate also names Deepgram's own hosts (``DEEPGRAM_HOSTS``), so a client that
reaches the emulator through the local world's proxy (``localworld.deepgram_proxy``) with
``https://api.eu.deepgram.com`` verifies it as it would verify Deepgram.

The CA is kept in the state directory and reused on the next start, so a
long-lived client configuration keeps working across emulator restarts.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

CA_CERT_NAME = "deepgram-emulator-ca.pem"
CA_KEY_NAME = "deepgram-emulator-ca-key.pem"
# Deepgram's endpoints (template.yaml's DeepgramRegions: US, EU, AU, IN).
DEEPGRAM_HOSTS = ("api.deepgram.com", "api.eu.deepgram.com", "api.au.deepgram.com", "api.in.deepgram.com")


@dataclass(frozen=True)
class TlsMaterial:
    ca_bundle: Path
    context: ssl.SSLContext


def prepare_tls(directory: Path) -> TlsMaterial:
    """Load or create the CA in ``directory`` and a context serving 127.0.0.1/localhost and
    Deepgram's hosts."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / CA_CERT_NAME
    key_path = directory / CA_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        ca = trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name="localworld Deepgram emulator")
        # The key signs certificates every client here trusts: owner-only.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(ca.private_key_pem.bytes())
        ca.cert_pem.write_to_path(str(cert_path))
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1", *DEEPGRAM_HOSTS)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    leaf.configure_cert(context)
    return TlsMaterial(ca_bundle=cert_path, context=context)
