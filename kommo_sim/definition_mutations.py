"""Mutations of custom field values and of the account's definitions: custom fields and
their options, loss reasons, tag names.

Definition changes send no webhook and leave the entities' ``updated_at`` alone [INF: Kommo
documents no webhook for them]: a renamed field or option shows under its new name in every
answer at once, and a deleted field's values vanish from every entity of its kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kommo_sim.edits import apply_custom_fields
from kommo_sim.engine import Engine, NotFound
from kommo_sim.fields import OPTION_TYPES, TYPES
from kommo_sim.render import JSON
from kommo_sim.state import KINDS, CustomField, Kind, LossReason, Option


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, not {kind!r}")
    return kind


class DefinitionMutations(Engine):
    # ----- values -----

    def set_custom_fields(
        self, kind: str, entity_id: int, values: dict[Any, Any], *, by: int | None = None
    ) -> None:
        """Set or clear (None) field values of a lead, contact or company: ``{field_id: value}``."""
        k = _kind(kind)
        with self._batch() as items:
            self._change(
                items,
                k,
                entity_id,
                by,
                lambda e: apply_custom_fields(self.state, e.custom_fields, k, values),
            )

    def clear_custom_field(
        self,
        kind: str,
        entity_id: int,
        field_id: int,
        *,
        keep_empty: bool = False,
        by: int | None = None,
    ) -> None:
        """Remove a field's values; ``keep_empty`` leaves the field present with ``values: []``
        (as real answers sometimes show it; its webhook then carries the field without values)."""
        k = _kind(kind)
        self._field(k, field_id)

        def edit(entity: Any) -> None:
            if keep_empty:
                entity.custom_fields[field_id] = []
            else:
                entity.custom_fields.pop(field_id, None)

        with self._batch() as items:
            self._change(items, k, entity_id, by, edit)

    # ----- definitions -----

    def add_custom_field(
        self,
        kind: str,
        name: str,
        type: str,
        *,
        code: str | None = None,
        options: Sequence[str] = (),
    ) -> JSON:
        """Add a definition (options for select, multiselect, radiobutton, category,
        multitext); returns it as ``GET …/custom_fields/{id}`` shows it."""
        k = _kind(kind)
        if type not in TYPES:
            raise ValueError(f"unsupported field type {type!r}")
        if (type in OPTION_TYPES) != bool(options):
            raise ValueError("options are required for, and only for, fields with options")
        fields = self.state.fields_of(k)
        field = CustomField(
            self.state.new_id("custom_field"),
            name,
            type,
            code,
            max((f.sort for f in fields.values()), default=500) + 2,
            k,
            None if type not in OPTION_TYPES else [],
        )
        for text in options:
            self._new_option(field, text, text if type == "multitext" else None)
        fields[field.id] = field
        return self.renderer.custom_field(field, self.base_url)

    def rename_custom_field(self, kind: str, field_id: int, name: str) -> None:
        self._field(_kind(kind), field_id).name = name

    def delete_custom_field(self, kind: str, field_id: int) -> None:
        k = _kind(kind)
        field = self._field(k, field_id)
        if field.code in ("PHONE", "EMAIL"):
            raise ValueError(f"field {field_id} ({field.code}) cannot be deleted")
        del self.state.fields_of(k)[field_id]
        for entity in self.state.table(k):
            entity.custom_fields.pop(field_id, None)

    def add_enum(self, kind: str, field_id: int, value: str, *, code: str | None = None) -> JSON:
        """Add an option to a field with options; returns ``{id, value, sort}``."""
        field = self._field(_kind(kind), field_id)
        if field.enums is None:
            raise ValueError(f"field {field_id} ({field.type}) has no options")
        option = self._new_option(field, value, code)
        return {"id": option.id, "value": option.value, "sort": option.sort}

    def rename_enum(self, kind: str, field_id: int, enum_id: int, value: str) -> None:
        """Rename an option: every value holding it shows the new text."""
        field = self._field(_kind(kind), field_id)
        option = field.option(int(enum_id))
        option.value = value
        if field.type == "multitext":
            option.code = value

    def add_loss_reason(self, name: str) -> JSON:
        now = self.clock.now_s()
        reasons = self.state.loss_reasons
        sort = max((r.sort for r in reasons.values()), default=0) + 1
        reason = LossReason(self.state.new_id("loss_reason"), name, sort, now, now)
        reasons[reason.id] = reason
        return self.renderer.loss_reason(reason, self.base_url)

    def rename_loss_reason(self, reason_id: int, name: str) -> None:
        reason = self.state.loss_reasons.get(reason_id)
        if reason is None:
            raise NotFound(f"no loss reason {reason_id}")
        reason.name, reason.updated_at = name, self.clock.now_s()

    def rename_tag(self, kind: str, tag_id: int, name: str) -> None:
        """Rename a tag in one kind's dictionary (entities are not touched)."""
        tags = self.state.tags_of(_kind(kind))
        if tag_id not in tags:
            raise NotFound(f"no {kind} tag {tag_id}")
        tags[tag_id].name = name

    # ----- internals -----

    def _field(self, kind: Kind, field_id: int) -> CustomField:
        field = self.state.fields_of(kind).get(int(field_id))
        if field is None:
            raise NotFound(f"no {kind} custom field {field_id}")
        return field

    def _new_option(self, field: CustomField, value: str, code: str | None) -> Option:
        assert field.enums is not None
        sort = max((o.sort for o in field.enums), default=0) + 1
        option = Option(self.state.new_id("enum"), value, sort, code)
        field.enums.append(option)
        return option
