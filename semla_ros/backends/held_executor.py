"""An executor that holds the builds it is given until it is released: the node's way of opening its ONNX
Runtime sessions after its first mask, not before (TensorRT builds, minutes long, are not held).

Why: with a cached export, an engine build is mostly opening an ONNX Runtime session (segmentation, and the
navigator's tower), a few hundred ms of CPU and interpreter lock. Started with the model, they ran beside the
rest of the start and the first frame on a 2-core robot, and PyTorch served that first frame anyway; held,
they start once the first mask is out. A released executor runs each job at once on a thread of its own (a
backend never has two builds in flight, so this is how their own one-thread pools ran them). A held job that
is cancelled (the backend closed) never runs. `wait_ready()` on a backend whose build is held blocks until
the release: only the node holds builds, and it never waits.
"""
from __future__ import annotations

import threading
from concurrent.futures import Executor, Future
from typing import Any, Callable


class HeldExecutor(Executor):
    def __init__(self, thread_name: str = "semla-engine-build"):
        self.thread_name = thread_name
        self._lock = threading.Lock()
        self._held: list[tuple[Future, Callable[..., Any], tuple, dict]] = []
        self._threads: list[threading.Thread] = []
        self._released = threading.Event()
        self._shut = False

    @property
    def released(self) -> bool:
        return self._released.is_set()

    @property
    def held(self) -> int:
        """Jobs waiting for the release (cancelled ones included until then)."""
        with self._lock:
            return len(self._held)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule a build after shutdown")
            if not self._released.is_set():
                self._held.append((future, fn, args, kwargs))
                return future
            self._start(future, fn, args, kwargs)
        return future

    def release(self) -> None:
        """Start every held job (each on its own thread); later submissions start at once."""
        with self._lock:
            if self._released.is_set() or self._shut:
                return
            self._released.set()
            held, self._held = self._held, []
            for job in held:
                self._start(*job)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Held jobs are cancelled (they never start); running ones are waited for when `wait`."""
        with self._lock:
            self._shut = True
            held, self._held = self._held, []
            threads = list(self._threads)
        for future, *_ in held:
            future.cancel()
        if wait:
            for thread in threads:
                thread.join()

    def _start(self, future: Future, fn, args, kwargs) -> None:
        thread = threading.Thread(target=self._run, args=(future, fn, args, kwargs), name=self.thread_name,
                                  daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    @staticmethod
    def _run(future: Future, fn, args, kwargs) -> None:
        if not future.set_running_or_notify_cancel():   # cancelled while held
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(result)
