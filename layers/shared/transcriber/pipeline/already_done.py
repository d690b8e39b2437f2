"""Is the work already done? Asked before Deepgram is paid: the idempotency record's replay is
trusted while the transcript it names is this version's, and without a record the transcript in
the bucket (its source version, ETag and options, in its S3 metadata) answers. One HEAD of the
transcript each time; a replay reports the request id and options of the transcript in the bucket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transcriber.domain import upload_options
from transcriber.domain.ordering import by_sequencer
from transcriber.domain.work import Order, WorkResult
from transcriber.errors import TranscriptionError
from transcriber.observability import logger

if TYPE_CHECKING:
    from transcriber.domain.events import S3ObjectRef
    from transcriber.services.storage import Storage, StoredTranscript, TranscriptSlot


class AlreadyDone:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def replay_holds(self, obj: S3ObjectRef, result: WorkResult) -> WorkResult | None:
        """A stored result that still answers for ``obj`` (None when it does not): its transcript
        exists and is this version's, and the replay reports that transcript's request id and
        options. (A superseded result is the ordering's to judge: ``Transcriber``.)"""
        try:
            stored = self.storage.look_transcript(obj).stored
        except TranscriptionError as exc:  # can't read the output: trust the record, never pay twice
            logger.warning("Can't check the stored result's transcript", extra={"error": exc.as_record()})
            return result
        if stored is None or not stored.made_from(obj):
            return None
        return reported(result, stored)

    def in_bucket(
        self, obj: S3ObjectRef, query: list[tuple[str, str]], slot: TranscriptSlot
    ) -> WorkResult | None:
        """The result of work already done, read from the transcript at ``obj``'s output key: made
        from this version, or from the same bytes (a copy in place), with the same options. A
        transcript of a later event for the key supersedes ``obj``. None: there is work to pay
        for. ``slot``: the HEAD of the transcript key (``Storage.look_transcript``), which the
        write then conditions on."""
        stored = slot.stored
        if stored is None:
            return None
        if not stored.made_from(obj) and by_sequencer(obj, stored.metadata) is Order.SUPERSEDED:
            return WorkResult(superseded=True)  # told by the transcript in hand: no S3 call
        if not stored.answers(obj, upload_options.metadata(query)):
            return None
        logger.info(
            "The transcript in the bucket is this work's; no Deepgram request",
            extra={"transcript_key": stored.key, "deepgram_request_id": stored.request_id},
        )
        found = WorkResult(
            key=stored.key,
            delivery=stored.delivery,
            options=upload_options.in_force(query),
            estimated_cost_usd=stored.estimated_cost_usd,
            replayed=True,
        )
        return reported(found, stored)


def reported(result: WorkResult, stored: StoredTranscript) -> WorkResult:
    """A replay reports the transcript in the bucket: its request id and options."""
    found = WorkResult(request_id=stored.request_id, options=stored.options()).to_record()
    return WorkResult.from_record(result.to_record() | found)
