"""`make status` finds the idempotency record the function wrote: the identity it computes from an
object's metadata is the function's own (``workflow.object_identity`` after the allow-list's
normalisation), whatever `make upload` put there."""

from __future__ import annotations

import pytest

from scripts import operate, status
from transcriber.domain.events import S3ObjectRef
from transcriber.domain.upload_options import UploadOptionPolicy, from_metadata
from transcriber.pipeline.workflow import object_identity


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ("language=es", "0=Ann,1=Raj"),  # ours beside Deepgram's: ours are not part of the identity
        ("diarize=True&keyterm=Acme&keyterm=Zorblax", ""),  # the function lowercases booleans
        ("", "0=Zoë Ångström"),  # ours alone: the identity is the plain one
    ],
)
def test_the_identity_status_looks_up_is_the_one_the_function_wrote(options: str, names: str) -> None:
    stored = operate.option_metadata(options, names)  # what S3 gives back as the object's metadata
    read = from_metadata(stored)
    written = object_identity(
        S3ObjectRef("in", "calls/a.wav", etag="e1", options=UploadOptionPolicy().validate(read))
    )

    assert written in status.identities("in", "calls/a.wav", {"etag": "e1", "metadata": stored})
