"""Who may use the sidecar and what it may reach: client keys, the door, egress,
secrets and their vault, the PCI guard's card-number scanner."""
