"""How a webhook body is laid out and encoded: real deliveries vary (API.md §7.2, pitfalls.md).

Observed variations, each a switch of :class:`Layout`:

- the account block first (recent captures) or last (older ones);
- with ``account[id]``, or without it (very old bodies carry only ``account[subdomain]``; the
  account then shows only as ``leads[...][account_id]``);
- brackets percent-encoded (PHP ``http_build_query``: ``%5B``/``%5D``) or sent raw;
- spaces as ``+`` (PHP ``urlencode``) or ``%20`` (``rawurlencode``).

``Layout()`` is the recent, fully encoded form of the fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

Pairs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Layout:
    account: Literal["first", "last"] = "first"
    account_id: bool = True
    encode_brackets: bool = True
    space: Literal["+", "%20"] = "+"

    def encode(self, account: Pairs, body: Pairs) -> str:
        """``account`` pairs (subdomain, id, _links) placed and encoded as this layout says."""
        # without account[id], as the oldest captures: account[subdomain] alone
        block = (
            list(account)
            if self.account_id
            else [p for p in account if p[0].endswith("subdomain]")]
        )
        pairs = [*block, *body] if self.account == "first" else [*body, *block]
        return "&".join(f"{self._quote(k, key=True)}={self._quote(v)}" for k, v in pairs)

    def _quote(self, text: str, key: bool = False) -> str:
        safe = "[]" if key and not self.encode_brackets else ""
        quoted = quote(text, safe=safe).replace("~", "%7E")
        return quoted.replace("%20", "+") if self.space == "+" else quoted


FIXED = Layout()
VARIANTS: tuple[Layout, ...] = tuple(
    Layout(account, with_id, brackets, space)  # type: ignore[arg-type]
    for account, with_id, brackets, space in itertools.product(
        ("first", "last"), (True, False), (True, False), ("+", "%20")
    )
)


def php_quote(text: str) -> str:
    """PHP ``urlencode``: like quote_plus, except that ``~`` is encoded too."""
    return FIXED._quote(text)
