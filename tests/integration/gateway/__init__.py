"""Real S3 clients against the dwray gateway."""
