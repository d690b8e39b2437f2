"""What each value of template.yaml's ``Mappings: Settings:`` may be.

The settings were template parameters once, and these were their constraints (AllowedPattern,
MinValue/MaxValue). CloudFormation checks no mapping value, so the template tests check them here.
"""

from __future__ import annotations

import re
from typing import Any

# What each Settings value may be (the settings were parameters once; these were their constraints).
# A value outside its rule fails here, before CloudFormation or a cold start refuses it.
KMS_KEY_ARN = r"(arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+)?"
NO_WILDCARD = r"[^*\\]*"
SETTING_RULES: dict[str, str | tuple[int, int]] = {
    "Functions.MemorySize": (128, 10240),
    "Functions.FunctionTimeout": (30, 900),
    "Functions.RetryFunctionTimeout": (30, 900),
    "Functions.LogRetentionDays": r"1|3|5|7|14|30|60|90|120|150|180|365|400|545|731|1096|1827|2192|2557|2922"
    r"|3288|3653",
    "Uploads.InputPrefix": r"[^*]*",
    "Uploads.InputSuffix": r"[^*]*",
    "Uploads.MediaExtensions": r"[a-z0-9]+(,[a-z0-9]+)*",
    "Uploads.ExistingBucketSuffix": NO_WILDCARD,
    "Uploads.UploadOptions": r"none|[a-z_]+(,[a-z_]+)*",
    "Uploads.UploadModels": r"|[a-z0-9][a-z0-9.-]*(,[a-z0-9][a-z0-9.-]*)*",
    "Uploads.TranscribeRestoredObjects": r"true|false",
    "Uploads.InputKmsKeyArn": KMS_KEY_ARN,
    "Deepgram.DeepgramApiUrl": r"|https://[^\s]+",
    "Deepgram.DeliveryMode": r"url|bytes|auto",
    "Deepgram.PresignExpirySeconds": (60, 900),  # Lambda's longest invocation: docs/security.md
    "Deepgram.SecretMaxAgeSeconds": (0, 86400),
    "Deepgram.DeepgramMaxAttempts": (1, 10),
    "Deepgram.IdempotencyTtlSeconds": (60, 31536000),
    "Capacity.CapacityAiCeiling": (0, 1000),  # 0: the DeepgramRegion's default
    "Capacity.CapacityPoolName": r"[A-Za-z0-9._-]{1,64}",
    "Capacity.CapacityTableName": r"|[A-Za-z0-9._-]{3,255}",
    "Capacity.EnableBackfill": r"true|false",
    "Capacity.BackfillPoolPercent": (1, 100),
    "Capacity.CapacityEntitiesSize": (1, 1000),
    "Capacity.CapacityWhisperSize": (1, 1000),
    # Seconds a backfill task waits inside the function (holding reserved concurrency live uploads
    # need) before its object waits in the dead-letter queue instead: a few seconds, not minutes.
    "Capacity.BackfillWaitSeconds": (0, 30),
    "Capacity.BufferedMaximumConcurrency": (2, 1000),
    "Capacity.BufferedBatchSize": (1, 10),
    "Failures.AsyncRetryAttempts": (0, 2),
    "Failures.MaximumEventAgeSeconds": (60, 21600),
    "Failures.RetryMaxAttempts": (2, 50),
    # The retry function delays with ChangeMessageVisibility, which stops at 12 hours.
    "Failures.RetryBaseDelaySeconds": (0, 43200),
    "Failures.RetryMaxDelaySeconds": (0, 43200),
    "Failures.BlockedRetryDelaySeconds": (0, 43200),
    "Failures.DeadLetterAgeAlarmSeconds": (300, 1209600),
    "Outputs.OutputFormats": r"(json|txt|srt|vtt)(,(json|txt|srt|vtt))*",
    "Outputs.CaptionWordsPerCue": (1, 50),
    "Outputs.CaptionLineLength": (0, 200),
    "Outputs.CaptionMaxLines": (1, 5),
    "Outputs.CaptionMaxCueSeconds": (0, 60),
    "Outputs.CaptionStartIndex": (0, 1000000),
    "Outputs.UploadOutputOptions": r"none|(speakers|caption_[a-z_]+)(,(speakers|caption_[a-z_]+))*",
    "Outputs.CompletionEvents": r"true|false",
    "Outputs.EventBusName": r"[A-Za-z0-9._/-]{1,256}",
    "Outputs.DeepgramPricePerMinuteUsd": r"[0-9]+([.][0-9]+)?",
    "Outputs.DeepgramAddOnPricesUsd": r"([a-z_]+(:[A-Za-z0-9_.-]+)?=[0-9]+([.][0-9]+)?"
    r"(,[a-z_]+(:[A-Za-z0-9_.-]+)?=[0-9]+([.][0-9]+)?)*)?",
    "Privacy.InputRetentionDays": (0, 36500),
    "Privacy.TranscriptRetentionDays": (0, 36500),
    "Privacy.FailureRetentionDays": (0, 36500),
    "Privacy.InputAccessLogBucket": r"|new|[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
    "Privacy.InputAccessLogPrefix": r"[A-Za-z0-9!_.*'()/-]*",
    # The webhook (docs/webhooks.md). API destinations call HTTPS endpoints only; the method carries
    # the event as its body; header names as HTTP allows; EventBridge's limits for the rest.
    "Webhook.Url": r"|https://[^\s]+",
    "Webhook.HttpMethod": r"POST|PUT|PATCH",
    "Webhook.ApiKeyHeader": r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,512}",
    "Webhook.ApiKeySecret": r"|[A-Za-z0-9/_+=.@:-]{1,2048}",
    "Webhook.RateLimitPerSecond": (1, 300),
    "Webhook.MaximumRetryAttempts": (0, 185),
    "Webhook.MaximumEventAgeSeconds": (60, 86400),
}


def satisfies(rule: str | tuple[int, int], value: Any) -> bool:
    if isinstance(rule, tuple):
        return rule[0] <= int(value) <= rule[1]
    return re.fullmatch(rule, str(value)) is not None
