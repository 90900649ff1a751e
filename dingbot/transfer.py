"""`dingbot export` / `dingbot import`: move one machine's database and memories to another setup.

Export reads what the settings point at (SQLite at DATABASE_PATH and the embedded memory folder beside
it; the service stopped, as the folder has one owner) into one JSON Lines file. Import writes such a
file into what the settings point at (typically DATABASE_URL and CHROMA_URL), migrating the schema
first; rows and memories already there are skipped, so an interrupted import can be run again. Vectors
travel with the memories: the import needs the same embedder, not a model call per memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FORMAT = "dinghook-export"
VERSION = 1


def _store(settings: Any) -> Any:
    from agent.memory.embeddings import build_embeddings
    from agent.memory.store import Mem0Store
    from agent.model.factory import build_extraction_model

    return Mem0Store.open(
        settings, extraction_model=build_extraction_model(settings), embeddings=build_embeddings(settings)
    )


def export(settings: Any, path: Path) -> dict[str, int]:
    from agent.storage.database import engine_for
    from agent.storage.transfer import export_rows

    engine = engine_for(settings)
    engine.check()  # one line for a damaged or unreachable database, or one newer than this code
    counts: dict[str, int] = {}
    store = _store(settings)
    try:
        with path.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
            for table, row in export_rows(engine):
                out.write(json.dumps({"table": table, "row": row}, ensure_ascii=False) + "\n")
                counts[table] = counts.get(table, 0) + 1
            for memory in store.export():
                out.write(json.dumps({"memory": memory}, ensure_ascii=False) + "\n")
                counts["memories"] = counts.get("memories", 0) + 1
    finally:
        store.close()
    return counts


def import_file(settings: Any, path: Path) -> dict[str, int]:
    from agent.errors import ConfigError
    from agent.storage.database import engine_for
    from agent.storage.transfer import import_rows

    rows: list[tuple[str, dict[str, Any]]] = []
    memories: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as source:
        header = json.loads(source.readline() or "{}")
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise ConfigError(
                f"{path} is not a {FORMAT} file of version {VERSION} (made by `dingbot export`)"
            )
        for line in source:
            item = json.loads(line)
            if "memory" in item:
                memories.append(item["memory"])
            else:
                rows.append((item["table"], item["row"]))
    engine = engine_for(settings)
    engine.check()
    engine.migrate()
    counts = import_rows(engine, rows)
    store = _store(settings)
    try:
        counts["memories"] = store.import_memories(memories)
    finally:
        store.close()
    return counts


def _run(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError
    from agent.settings.loading import load_settings
    from agent.storage.health import StorageError
    from agent.storage.migrate import SchemaTooNew

    try:
        settings = load_settings(runnable=False)
        path = Path(args.file)
        counts = export(settings, path) if args.command == "export" else import_file(settings, path)
    except (ConfigError, StorageError, SchemaTooNew, OSError, ValueError) as exc:
        print(f"dingbot: {args.command} failed: {exc}", file=sys.stderr)
        return 2
    done = "exported to" if args.command == "export" else "imported from"
    print(f"{done} {args.file}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def add_parser(sub: Any) -> None:
    out = sub.add_parser(
        "export",
        help="write the database and the embedded memories to a file (the service stopped)",
        description="Export DATABASE_PATH's tables and the embedded memory folder to one JSON Lines file.",
    )
    out.add_argument("file", help="where to write, e.g. dinghook-export.jsonl")
    out.set_defaults(handler=_run)
    into = sub.add_parser(
        "import",
        help="load a `dingbot export` file into the configured database and memory store",
        description="Import an export into DATABASE_URL / DATABASE_PATH and CHROMA_URL / QDRANT_URL.",
    )
    into.add_argument("file", help="a file `dingbot export` wrote")
    into.set_defaults(handler=_run)
