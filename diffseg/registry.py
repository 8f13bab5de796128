"""One shape for every registry (schedules, weightings, timestep samplers, samplers, architectures): a read-only
mapping from the names search-space files use to factories, with ``build(name, *args, **params)`` that turns a
wrong name into "unknown <kind> ...; did you mean ...?" and wrong parameters into a ``ValueError`` naming both."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def suggest(name: object, allowed, list_up_to: int = 20) -> str:
    """"did you mean 'x'? allowed: [...]" for a name that is not in ``allowed`` (difflib's closest matches); a
    long list of allowed names is left out when there is a close match."""
    allowed = sorted(map(str, allowed))
    close = difflib.get_close_matches(str(name), allowed, n=3, cutoff=0.6)
    if not close:
        return f"allowed: {allowed}"
    hint = f"did you mean {' or '.join(map(repr, close))}?"
    return f"{hint} allowed: {allowed}" if len(allowed) <= list_up_to else hint


def unknown(kind: str, name: object, allowed) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; {suggest(name, allowed)}")


class Registry(Mapping[str, F], Generic[F]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory
        return add

    def __getitem__(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    def check(self, name: str, *args: Any, **params: Any) -> F:
        """The factory of ``name`` after checking that it accepts these arguments: an unknown parameter is named
        with the closest accepted one (``{gama: 5}`` -> "did you mean 'gamma'?")."""
        factory = self[name]
        sig = inspect.signature(factory)
        accepted = [n for n, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            accepted_kw = accepted[len(args):]
            for key in params:
                if key not in accepted_kw:
                    raise ValueError(f"bad parameters for {self.kind} {name!r}: unknown parameter {key!r}; "
                                     f"{suggest(key, accepted_kw) if accepted_kw else 'it takes no parameters'}")
        try:
            sig.bind(*args, **params)
        except TypeError as exc:
            raise ValueError(f"bad parameters for {self.kind} {name!r}: {exc}") from None
        return factory

    def build(self, name: str, *args: Any, **params: Any) -> Any:
        return self.check(name, *args, **params)(*args, **params)
