"""A Deepgram-compatible emulator of the pre-recorded ``POST /v1/listen`` API.

Usage::

    from localworld.deepgram import DeepgramEmulator

    with DeepgramEmulator(api_keys={"key1"}) as emu:
        os.environ["REQUESTS_CA_BUNDLE"] = str(emu.ca_bundle)
        requests.post(f"{emu.url}/v1/listen?model=nova-3", data=wav,
                      headers={"Authorization": "Token key1", "Content-Type": "audio/wav"})
        emu.faults.next(2, status=503)  # the next two requests answer 503

See ``server.py`` for the request flow and ``faults.py`` for fault injection.
"""

from localworld.deepgram.asr import Recognition, Word
from localworld.deepgram.errors import BodyStyle
from localworld.deepgram.faults import Fault, FaultKind, Faults
from localworld.deepgram.server import CallbackAttempt, DeepgramEmulator, LoggedRequest

__all__ = [
    "BodyStyle",
    "CallbackAttempt",
    "DeepgramEmulator",
    "Fault",
    "FaultKind",
    "Faults",
    "LoggedRequest",
    "Recognition",
    "Word",
]
