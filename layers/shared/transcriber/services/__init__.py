"""What the pipeline talks to: S3, DynamoDB, Secrets Manager, EventBridge and Deepgram."""
