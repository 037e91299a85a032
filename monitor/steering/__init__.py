"""Pure nftables steering: ``rules`` (what must exist), ``listing`` (what exists), ``plan`` (one transaction)."""
