"""Run one pipeline step in a forked child process while the parent does other work.

``oscdeep run`` starts by importing its processing modules and initialising numba, about a
second of single-core work; ingest and the master calibrations need little of that. Forked
first, they run on the other core meanwhile. The child inherits the open library (its pooled
connections are dropped, as SQLAlchemy asks after a fork) and reports progress and its result
through a pipe; a step that fails comes back as the same one-line error.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from oscdeep.db.engine import Library
from oscdeep.errors import OscdeepError
from oscdeep.progress import Progress

_PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies


class Pending:
    """The outcome of the child's step, available once the ``with`` block has ended."""

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def result(self) -> Any:
        """The step's return value; raises its error (OscdeepError for oscdeep errors)."""
        if not self._done:
            raise RuntimeError("the step has not finished")
        if self._error is not None:
            raise self._error
        return self._value

    def _set(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error, self._done = value, error, True


class _PipeProgress:
    """Progress in the child: each call goes to the parent, which draws it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def begin(self, description: str, total: int | None = None) -> None:
        self._conn.send(("begin", description, total))

    def advance(self, step: int = 1) -> None:
        self._conn.send(("advance", step))

    def end(self) -> None:
        self._conn.send(("end",))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, even by SIGKILL, so a
    killed run leaves no orphan writing to the library while the next run starts."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _child(conn: Any, library: Library, step: Callable[..., Any], kwargs: dict[str, Any],
           parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the child
    if sys.platform.startswith("linux"):
        _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    library.engine.dispose(close=False)
    try:
        value = step(library, progress=_PipeProgress(conn), **kwargs)
    except OscdeepError as exc:
        conn.send(("error", str(exc), None))
    except BaseException:  # noqa: BLE001 (a bug: its traceback goes to the parent)
        conn.send(("error", None, traceback.format_exc()))
    else:
        conn.send(("done", value))
    finally:
        conn.close()


def _relay(conn: Any, progress: Progress, pending: Pending) -> None:
    """Parent thread: draw the child's progress until its result arrives."""
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "begin":
                progress.begin(message[1], message[2])
            elif kind == "advance":
                progress.advance(message[1])
            elif kind == "end":
                progress.end()
            elif kind == "done":
                pending._set(message[1])
                return
            else:
                text, trace = message[1], message[2]
                pending._set(error=OscdeepError(text) if text is not None else
                             RuntimeError(f"the forked step failed:\n{trace}"))
                return
    except EOFError:
        pending._set(error=RuntimeError("the forked step ended without a result"))


def fork_available() -> bool:
    """Whether the step is forked: on Linux. (macOS can fork, but forking a process that has
    loaded its system frameworks is unsafe there, which is why Python spawns by default.)"""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


@contextmanager
def step_in_child(step: Callable[..., Any], library: Library, *, progress: Progress,
                  **kwargs: Any) -> Iterator[Pending]:
    """Run ``step(library, progress=..., **kwargs)`` in a forked child while the ``with``
    block runs; afterwards ``pending.result()`` is its return value (picklable). Where
    processes cannot be forked the step runs first, in this process."""
    pending = Pending()
    if not fork_available():
        try:
            pending._set(step(library, progress=progress, **kwargs))
        except OscdeepError as exc:
            pending._set(error=exc)
        yield pending
        return
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, library, step, kwargs, os.getpid()),
                        daemon=True)
    child.start()
    send.close()
    relay = threading.Thread(target=_relay, args=(receive, progress, pending), daemon=True)
    relay.start()
    try:
        yield pending
        relay.join()
        child.join()
    except BaseException:
        child.terminate()
        child.join()
        relay.join(timeout=5)  # the closed pipe ends it
        raise
    finally:
        receive.close()
