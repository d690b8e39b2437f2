"""Shared domain code for the S3 -> Deepgram transcription functions (shipped as a Lambda layer)."""
