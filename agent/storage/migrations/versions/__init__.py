"""One file per schema version; the newest is what this code expects."""
