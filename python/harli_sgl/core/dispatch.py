"""Route messages to handlers by exact type; unknown types are a bug and raise."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

M = TypeVar("M")


class UnknownMessage(TypeError):
    pass


class Dispatcher(Generic[M]):
    """One per receiving process, typed with the base of what it receives (``Dispatcher[FromWorker]``
    in the scheduler, ``Dispatcher[ToWorker]`` in the worker). ``dispatcher(msg)`` calls the
    handler for ``type(msg)``."""

    def __init__(self, handlers: dict[type[M], Callable[[Any], Any]]):
        self._handlers = dict(handlers)

    def __call__(self, message: M) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise UnknownMessage(f"no handler for {type(message).__name__}")
        return handler(message)

    def handles(self, message_type: type) -> bool:
        return message_type in self._handlers

    def handled_types(self) -> frozenset[type]:
        return frozenset(self._handlers)
