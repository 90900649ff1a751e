"""From an accepted message to a delivered reply: intake, inbox, dispatcher, outbox, courier, checks."""
