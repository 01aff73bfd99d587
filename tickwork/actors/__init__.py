"""The ``@job`` decorator, the handler registry and the built-in actors (``http``, ``python``)."""

from tickwork.actors.decorator import JobFunction, job
from tickwork.actors.registry import (
    Runtime,
    get_function,
    get_runtime,
    registered_functions,
    set_runtime,
    validate_python_handler,
)

__all__ = [
    "JobFunction",
    "Runtime",
    "get_function",
    "get_runtime",
    "job",
    "registered_functions",
    "set_runtime",
    "validate_python_handler",
]
