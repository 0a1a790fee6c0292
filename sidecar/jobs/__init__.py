"""Durable background jobs: `X-Webhook-Callback` calls run later, called back signed."""
