"""The default cache key of a call to a ``@cache.cached`` function (see ``decorator.py`` for
what it names and why): the call's arguments bound to the function's signature, once per call
shape, as a ``str.format`` template.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .keys import MAX_KEY_BYTES

__all__ = ["CallKeys", "check_default_keyable", "function_name"]

_SCALARS = frozenset({str, int, float, bool, type(None)})

#: How a parameter left at a default that is not a scalar appears in a default key: the
#: default object is the same one on every such call, and no scalar's ``repr`` reads so.
_DEFAULT = "<default>"

#: Keys remembered per function (then forgotten all at once: a dict without recency is
#: cheaper on the hit path than an LRU, and a working set past this is rare for one function).
_MAX_KNOWN = 4096

#: Call shapes (positional count, keyword names) remembered per function. A function taking
#: ``**kwargs`` can be called with ever new names: past this, shapes are bound but not kept.
_MAX_SHAPES = 64


class _Slot:
    """Stands for the argument at ``index`` while a call shape is bound to the signature."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class CallKeys:
    """One function's call shapes, each bound once to its signature.

    A shape (how many positional arguments, which keyword names, in which order) decides where
    every argument lands, so binding placeholders once per shape gives a ``str.format``
    template of the default key: a call then costs a dict lookup and a format, not a
    ``Signature.bind``.
    """

    def __init__(self, function: Callable[..., Any], prefix: str) -> None:
        self._function = function
        self._signature = inspect.signature(function)
        self._prefix = prefix
        self._templates: dict[object, str] = {}
        #: Keys already formatted, by the call's arguments, for calls whose arguments are all
        #: ``str`` or ``int``: a repeated call (a cache hit, mostly) then costs one dict lookup
        #: rather than a format. Only those two types, because equal values of other types
        #: (``1``, ``True``, ``1.0``) would find one another's key, whose ``repr`` differs.
        self._known: dict[object, str] = {}

    def template(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        """The default key's template for this call's shape; raises the function's own
        ``TypeError`` for arguments that do not fit its signature."""
        shape: object = (len(args), *kwargs) if kwargs else len(args)
        template = self._templates.get(shape)
        if template is None:
            template = self._bind_shape(args, kwargs)
            if len(self._templates) < _MAX_SHAPES:
                self._templates[shape] = template
        return template

    def default_key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        memo_key: object = (args, *kwargs.items()) if kwargs else args
        memoizable = True
        for value in (*args, *kwargs.values()) if kwargs else args:
            kind = type(value)
            if kind is not str and kind is not int:
                memoizable = False
                break
        if memoizable:
            known = self._known.get(memo_key)
            if known is not None:
                return known
        text = self._format(args, kwargs)
        if memoizable:
            if len(self._known) >= _MAX_KNOWN:
                self._known.clear()
            self._known[memo_key] = text
        return text

    def _format(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        template = self._templates.get((len(args), *kwargs) if kwargs else len(args))
        if template is None:
            template = self.template(args, kwargs)
        values = (*args, *kwargs.values()) if kwargs else args
        for value in values:
            if type(value) not in _SCALARS:
                values = self._defaults_marked(args, kwargs)
                break
        text = template.format(*values)
        if len(text) > MAX_KEY_BYTES // 4 and len(text.encode()) > MAX_KEY_BYTES:
            digest = hashlib.sha256(text.encode(), usedforsecurity=False).hexdigest()
            text = f"{self._prefix}#{digest}"
            if len(text.encode()) > MAX_KEY_BYTES:
                raise InvalidArgumentError(f"the name {self._prefix!r} is too long for a cache key")
        return text

    def _bind_shape(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        slots = [_Slot(i) for i in range(len(args) + len(kwargs))]
        try:
            bound = self._signature.bind(
                *slots[: len(args)], **dict(zip(kwargs, slots[len(args) :], strict=True))
            )
        except TypeError as error:
            raise self._own_error(args, kwargs, error) from None
        bound.apply_defaults()
        parts = []
        for name, parameter in self._signature.parameters.items():
            value = bound.arguments[name]
            if parameter.kind is parameter.VAR_POSITIONAL:
                if value:
                    items = ", ".join(f"{{{slot.index}!r}}" for slot in value)
                    parts.append(f"*{name}=({items}{',' if len(value) == 1 else ''})")
            elif parameter.kind is parameter.VAR_KEYWORD:
                if value:
                    items = ", ".join(
                        f"({_braces(repr(keyword))}, {{{value[keyword].index}!r}})"
                        for keyword in sorted(value)
                    )
                    parts.append(f"**{name}=[{items}]")
            elif isinstance(value, _Slot):
                parts.append(f"{name}={{{value.index}!r}}")
            elif type(value) in _SCALARS:
                parts.append(f"{name}={_braces(repr(value))}")
            else:
                parts.append(f"{name}={_DEFAULT}")
        return f"{_braces(self._prefix)}({', '.join(parts)})"

    def _own_error(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], error: TypeError
    ) -> TypeError:
        """The ``TypeError`` the function raises for these arguments. Calling an ``async def``
        binds its arguments and runs none of its body; other callables (a partial, say) could
        run code, so they get the signature's error."""
        function = self._function
        if inspect.isfunction(function) and function.__code__.co_flags & inspect.CO_COROUTINE:
            try:
                coroutine = function(*args, **kwargs)
            except TypeError as own:
                return own
            coroutine.close()  # a wrapper that takes anything: the signature is its wrapped one
        return TypeError(f"{function_name(function)}(): {error}")

    def _defaults_marked(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[object, ...]:
        """The call's values for its template, where a non-scalar is accepted only as the very
        object its parameter defaults to, and then reads as the parameter left out does."""
        values = [*args, *kwargs.values()]
        slots = [_Slot(i) for i in range(len(values))]
        bound = self._signature.bind(
            *slots[: len(args)], **dict(zip(kwargs, slots[len(args) :], strict=True))
        )
        for name, parameter in self._signature.parameters.items():
            held = bound.arguments.get(name, ())
            if isinstance(held, _Slot):
                value = values[held.index]
                if type(value) not in _SCALARS and value is parameter.default:
                    values[held.index] = _DefaultMark()  # a scalar default is its repr already
                held = (held,)
            elif isinstance(held, dict):
                held = tuple(held.values())
            for slot in held:
                value = values[slot.index]
                if type(value) not in _SCALARS and not isinstance(value, _DefaultMark):
                    raise InvalidArgumentTypeError(
                        f"{self._prefix}: the default cache key takes str, int, float, bool and "
                        f"None arguments only, not {type(value).__name__} (argument {name!r}); "
                        "pass key=... (a function of the same arguments that returns the key)"
                    )
        return tuple(values)


class _DefaultMark:
    def __repr__(self) -> str:
        return _DEFAULT


def check_default_keyable(function: Callable[..., Any]) -> None:
    """Refuse, at decoration time, a function whose result depends on more than its module,
    qualified name and arguments, which is all that the default key names."""
    inner = inspect.unwrap(function)  # the def under functools.wraps wrappers
    code = getattr(inner, "__code__", None)
    # __class__ is the class that defines a method, which the qualified name names already
    captured = [n for n in getattr(code, "co_freevars", ()) if n != "__class__"]
    if isinstance(function, functools.partial) or isinstance(inner, functools.partial):
        reason = "it is a functools.partial, whose stored arguments the key cannot see"
    elif inspect.ismethod(function) or inspect.ismethod(inner):
        reason = "it is a bound method, whose object the key cannot see"
    elif captured:
        reason = (
            f"it reads {', '.join(captured)} from the function that defines it: two functions "
            "made by that function would share entries, in this process and in every other"
        )
    else:
        return
    raise InvalidArgumentError(
        f"{function_name(function)}: the default cache key names a function by its module and "
        f"qualified name, and {reason}. Pass key=... (a function of the same arguments that "
        "returns a key naming everything the result depends on), or make those values arguments"
    )


def function_name(function: Callable[..., Any]) -> str:
    qualname = getattr(function, "__qualname__", None)
    if qualname is None:
        return repr(function)
    return f"{function.__module__}.{qualname}"


def _braces(text: str) -> str:
    """``text`` as a literal part of a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")
