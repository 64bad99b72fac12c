"""The case key: which suite, which variant, the variant's own params and the suite's grid params.

The plan makes one :class:`CaseKey` per case; every record carries it (``"key"`` in schema 3), so
no reader has to work out again which params are swept by the suite and which belong to the
variant. :func:`params_text` is the one way params are serialised (identity, row ids, CSV) and
:func:`case_label` the one way a case is named (``variant[p=v, ...]``). Anchor:
``torch.utils.benchmark``'s frozen ``TaskSpec``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

Params = tuple[tuple[str, Any], ...]


def params_text(params: Any) -> str:
    """Params (or any JSON-like value) as canonical JSON: keys sorted, unknown types as str()."""
    return json.dumps(params, sort_keys=True, default=str)


def kv_text(params: Mapping[str, Any], sep: str = ", ") -> str:
    """``k=v`` pairs in their order: ``seq_len=256, causal=True``."""
    return sep.join(f"{k}={v}" for k, v in params.items())


def case_label(variant: str, variant_params: Mapping[str, Any] | None = None, sep: str = ", ") -> str:
    """A case's name among its suite's cases at one grid point: ``ddim[steps=10, eta=0.0]``
    (the variant alone when it has no params of its own)."""
    return f"{variant}[{kv_text(variant_params, sep)}]" if variant_params else variant


def _items(params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Params:
    if params is None:
        return ()
    items = params.items() if isinstance(params, Mapping) else params
    return tuple((str(k), v) for k, v in items)


@dataclass(frozen=True, eq=False)
class CaseKey:
    """The identity of a case across runs, and which of its params are grid params.

    Params keep their declared order (labels read in that order); identity, hashing and ordering
    go by (suite, variant, the canonical text of all params), so a key is a dict key and sorts.
    """

    suite: str
    variant: str
    variant_params: Params = ()
    grid_params: Params = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant_params", _items(self.variant_params))
        object.__setattr__(self, "grid_params", _items(self.grid_params))

    @classmethod
    def split(cls, suite: str, variant: str, params: Mapping[str, Any] | Iterable[tuple[str, Any]],
              grid_names: Iterable[str]) -> "CaseKey":
        """The key of a case whose merged ``params`` hold the grid params named ``grid_names``."""
        grid = set(grid_names)
        items = _items(params)
        return cls(suite, variant, tuple(kv for kv in items if kv[0] not in grid),
                   tuple(kv for kv in items if kv[0] in grid))

    @property
    def variant_dict(self) -> dict[str, Any]:
        return dict(self.variant_params)

    @property
    def grid_dict(self) -> dict[str, Any]:
        return dict(self.grid_params)

    @property
    def params(self) -> dict[str, Any]:
        """All params, grid params first (the order the plan merges them in)."""
        return {**dict(self.grid_params), **dict(self.variant_params)}

    @property
    def ident(self) -> tuple[str, str, str]:
        """(suite, variant, canonical params text): what equality, hashing and order use."""
        return case_ident(self.suite, self.variant, self.params)

    @property
    def grid_ident(self) -> tuple[str, str]:
        """(suite, canonical grid params text): the grid point, shared by every variant there."""
        return (self.suite, params_text(self.grid_dict))

    @property
    def label(self) -> str:
        return case_label(self.variant, self.variant_dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaseKey) and self.ident == other.ident

    def __hash__(self) -> int:
        return hash(self.ident)

    def __lt__(self, other: "CaseKey") -> bool:
        return self.ident < other.ident

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "variant": self.variant, "variant_params": self.variant_dict,
                "grid_params": self.grid_dict}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseKey":
        if not isinstance(data, Mapping):
            raise ValueError(f"a case key must be an object, not {type(data).__name__}")
        vp, gp = data.get("variant_params") or {}, data.get("grid_params") or {}
        if not isinstance(vp, Mapping) or not isinstance(gp, Mapping):
            raise ValueError("a case key's variant_params and grid_params must be objects")
        return cls(str(data.get("suite", "")), str(data.get("variant", "")), vp, gp)


def case_ident(suite: str, variant: str, params: Mapping[str, Any]) -> tuple[str, str, str]:
    """(suite, variant, canonical params text) of a case given by its merged params (run.json's
    planned cases, the running case): equal to :attr:`CaseKey.ident` of the same case."""
    return (suite, variant, params_text(dict(params)))
