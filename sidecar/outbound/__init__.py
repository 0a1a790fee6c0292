"""Sending attempts upstream: the client, its transport, and the retry budget that limits them."""
