"""Thin adapters, one effect each: Kubernetes, files, sockets, nftables, HTTP."""
