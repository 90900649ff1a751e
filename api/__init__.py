"""The surface: FastAPI app, DingTalk protocol, delivery. Imports agent/, never the reverse."""
