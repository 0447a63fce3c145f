"""Pipes messages read whole. Dagster's file reader hands a line to the JSON parser as soon as part of it is on
disk, so a large message (an SFT stage's record, written by the stage in several chunks) read mid-write fails to
parse, the reader thread stops and the stage's result is lost. This reader parses a line once its newline is
there."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter


class WholeLineMessageReader(dg.PipesMessageReader):
    """Messages from a file the stage appends to, one per line: `path` (a folder both sides see), else a temporary
    file. The file is removed when the session closes."""

    def __init__(self, path: str | None = None):
        self._path = path

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        with tempfile.TemporaryDirectory() as tmp:
            path = self._path or os.path.join(tmp, "messages")
            open(path, "w", encoding="utf-8").close()
            closed = threading.Event()
            thread = threading.Thread(target=read_lines, args=(path, handler, closed), daemon=True)
            thread.start()
            try:
                yield {
                    PipesDefaultMessageWriter.FILE_PATH_KEY: path,
                    PipesDefaultMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: False,
                }
            finally:
                closed.set()
                thread.join()
                if self._path and os.path.exists(path):
                    os.remove(path)

    def no_messages_debug_text(self) -> str:
        return f"Attempted to read messages from {self._path or 'a temporary file'}."


def read_lines(path: str, handler, closed: threading.Event) -> None:
    """Each complete line to the handler until the session closes and the file has no more; a line cut short by a
    process that died mid-write is never parsed."""
    pending = ""
    try:
        with open(path, encoding="utf-8") as fh:
            while True:
                part = fh.readline()
                if part:
                    pending += part
                    if pending.endswith("\n"):
                        handler.handle_message(json.loads(pending))
                        pending = ""
                elif closed.is_set():
                    break
                else:
                    time.sleep(0.01)
    except Exception:
        handler.report_pipes_framework_exception("WholeLineMessageReader", sys.exc_info())
        raise
