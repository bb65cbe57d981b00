"""Check the ``params`` of a run against the ones its strategy declares (parsed at submission)."""

from __future__ import annotations

from collections.abc import Mapping

from farm.errors import InvalidInput
from farm.sandbox.protocol import ParamValue

# The JSON values each declared default's type accepts (an int is a fine float).
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
}


def check_params(
    declared: Mapping[str, str | None] | None, params: Mapping[str, ParamValue]
) -> None:
    """Refuse (``InvalidInput``) names the strategy does not declare and values whose type
    differs from the default's. ``declared`` None (not literal in the source) accepts any:
    the agent's runtime then refuses unknown names when it starts."""
    if declared is None or not params:
        return
    unknown = sorted(set(params) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise InvalidInput(
            f"unknown strategy params: {', '.join(unknown)}; the strategy declares: {names}",
            declared=sorted(declared),
        )
    for name, value in params.items():
        kind = declared[name]
        accepted = _ACCEPTS.get(kind) if kind else None
        if accepted is None:
            continue
        if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            raise InvalidInput(
                f"param {name} must be {'a' if kind != 'int' else 'an'} {kind} like its default, "
                f"got {value!r}",
                param=name,
            )
