"""What a WebSocket client subscribes to: ``{"subscribe": "all"}`` or lists of pipeline/lead ids.

Limits, so that a client's frames cost the process little, whatever they hold:

- a list holds at most :data:`MAX_FILTER_IDS` (1,000) ids: a consumer that follows more leads
  than that subscribes to their pipelines, or to ``"all"``, and filters itself;
- a frame is at most :data:`MAX_FRAME_BYTES` (64 KiB): two full lists of the largest ids
  (19 digits) take about 42 KB. uvicorn closes a socket that sends more with 1009 (its
  ``ws_max_size``, :mod:`service.web.server`), and so does the hub's receive loop;
- a frame nests at most 3 levels and holds at most 4 objects and lists: anything more (a deeply
  nested frame, which would exhaust the parser's recursion) is refused before it is parsed.
"""

from __future__ import annotations

import dataclasses
import json

MAX_FILTER_IDS = 1_000
MAX_FRAME_BYTES = 64 << 10
_MAX_CONTAINERS = 4  # {"subscribe": {"pipeline_ids": [...], "lead_ids": [...]}}


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
        if text is not None and text.count("{") + text.count("[") > _MAX_CONTAINERS:
            raise FilterError("too many nested objects or lists for a subscribe frame")
        try:
            msg = json.loads(text) if text is not None else None
        except RecursionError:  # the guard above keeps it from happening; never drop the socket
            raise FilterError("nested too deeply") from None
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
