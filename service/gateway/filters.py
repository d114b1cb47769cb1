"""What a WebSocket client subscribes to: ``{"subscribe": "all"}`` or lists of pipeline/lead ids."""

from __future__ import annotations

import dataclasses
import json

MAX_FILTER_IDS = 10_000


class FilterError(ValueError):
    """A client frame that is not a valid subscription; the message is the reason sent back."""


@dataclasses.dataclass(frozen=True)
class Filter:
    """The leads a socket wants: in a listed pipeline or with a listed id; no lists: all."""

    pipeline_ids: frozenset[int] | None = None
    lead_ids: frozenset[int] | None = None

    def matches(self, lead_id: object, pipeline_id: object) -> bool:
        pipelines, leads = self.pipeline_ids, self.lead_ids
        if pipelines is None and leads is None:
            return True
        return bool(pipelines and pipeline_id in pipelines or leads and lead_id in leads)

    def as_json(self) -> object:
        fields = {"pipeline_ids": self.pipeline_ids, "lead_ids": self.lead_ids}
        return {k: sorted(v) for k, v in fields.items() if v is not None} or "all"

    @classmethod
    def parse(cls, text: str | None) -> Filter:
        """``{"subscribe": "all"}`` or ``{"subscribe": {"pipeline_ids": [...], ...}}``."""
        try:
            msg = json.loads(text) if text is not None else None
        except ValueError:
            raise FilterError("not JSON") from None
        if not isinstance(msg, dict) or set(msg) != {"subscribe"}:
            raise FilterError('expected {"subscribe": "all" or {"pipeline_ids"/"lead_ids": [...]}}')
        spec = msg["subscribe"]
        if spec == "all":
            return cls()
        if not isinstance(spec, dict) or not spec or not set(spec) <= {"pipeline_ids", "lead_ids"}:
            raise FilterError('subscribe takes "all" or {"pipeline_ids": [...], "lead_ids": [...]}')
        lists: dict[str, frozenset[int]] = {}
        for key, ids in spec.items():
            if (
                not isinstance(ids, list)
                or len(ids) > MAX_FILTER_IDS
                or not all(type(i) is int and 0 < i < 1 << 63 for i in ids)
            ):
                raise FilterError(f"{key} must list up to {MAX_FILTER_IDS} positive integers")
            lists[key] = frozenset(ids)
        return cls(lists.get("pipeline_ids"), lists.get("lead_ids"))
