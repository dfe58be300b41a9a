# Types of the compiled hot loop (_hostscan.c); see hosts.Matcher.
from collections.abc import Callable

_Edit = tuple[int, int, bytes | None]

MAX_ANCHORS: int  # the most anchors rewrite() takes
MAX_RUN: int  # the longest host run whose start is looked for (hosts._RUN_LIMIT)
MAX_SHAPES: int  # the most key shapes a memo tries per hit
MAX_LEFT: int  # bounds of a shape's left and right parts
MAX_RIGHT: int

class Memo:
    def __init__(self) -> None: ...
    # File an edit under the bytes of its key and the key's shape; False if the memo already
    # tries MAX_SHAPES other shapes (nothing is filed).
    def store(self, key: bytes, left: int, right: int, at_anchor: bool, edit: _Edit, /) -> bool: ...
    def find(self, key: bytes, left: int, right: int, at_anchor: bool, /) -> _Edit | None: ...
    def shapes(self) -> list[tuple[int, int, bool]]: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...

def rewrite(
    buf: bytes,
    base: int,
    limit: int,
    specs: tuple[tuple[bytes, Memo], ...],  # (anchor, its memo)
    miss: Callable[[int, int], _Edit | None],
    /,
) -> tuple[bytes, int]: ...
