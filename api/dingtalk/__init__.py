"""DingTalk protocol: callback signatures, payload parsing, reply bodies, senders."""
