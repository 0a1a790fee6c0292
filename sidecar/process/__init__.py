"""The running sidecar process: Hypercorn serving, its state file, its memory."""
