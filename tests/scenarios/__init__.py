"""Scenario scripts that run whole systems (monitor, HAProxy, nft) inside a private network namespace."""
