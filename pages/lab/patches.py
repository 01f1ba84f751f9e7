"""Two changes to Streamlit 1.67, applied by ``app.py`` before anything else: one fix the lab needs under load,
and one start-up cost cut. Importing this module changes nothing; calling each function applies its patch.

**Uploads lost when a script run starts.** To upload a file the browser first asks the server for upload URLs
(a ``file_urls_request``); the answer (``file_urls_response``) waits in the session's outgoing message queue
until the server flushes it. When a script run starts, Streamlit clears that queue, keeping only lifecycle
messages (``ForwardMsgQueue.clear(retain_lifecycle_msgs=True)``), so an answer still waiting there is dropped
and the browser waits for it forever: the file never arrives and the user sees nothing happen. On an idle
machine the window is a few microseconds; with 20 sessions on two cores (``benchmarks/load_test.py``) the
queue is flushed late and 8 of 20 sessions that dropped a query file right after renaming a class lost it.
The patch keeps those answers through the clear (they belong to no script run).

**Start-up: reading every installed package's metadata.** When the server starts, Streamlit looks for custom
components among all installed distributions (``components.v2.manifest_scanner``). Its first filter,
``_is_likely_streamlit_component_package``, reads each distribution's whole ``METADATA`` through the email
parser, long description included (torch's alone is ~50 kB); for this project's ~100 packages that is
0.3 s of CPU, holding the GIL, before the server answers. The filter only looks at three header fields (the
name, ``Summary``, ``Requires-Dist``), so :func:`read_component_metadata_headers_only` gives it the headers and
not the body: same candidates, found in a fraction of the time (``tests/test_streamlit_patches.py`` compares
both filters on every installed distribution).
"""

from __future__ import annotations

import email.parser
from types import SimpleNamespace
from typing import Any

_KEPT_TYPES = ("file_urls_response",)


def keep_upload_answers_through_queue_clears() -> bool:
    """Patch ``ForwardMsgQueue.clear`` once per process; returns whether the patch is (now) in place.

    If Streamlit's internals are not what this was written against, nothing is patched (and False returned):
    the app then works as Streamlit does.
    """
    try:
        from streamlit.runtime.forward_msg_queue import ForwardMsgQueue
    except ImportError:  # pragma: no cover - another Streamlit layout
        return False
    original = ForwardMsgQueue.clear
    if getattr(original, "_fewshot_keeps_upload_answers", False):
        return True
    if not hasattr(ForwardMsgQueue(), "_queue"):  # pragma: no cover - another Streamlit layout
        return False

    def clear(self: Any, retain_lifecycle_msgs: bool = False, fragment_ids_this_run: list[str] | None = None) -> None:
        kept = [m for m in self._queue if m.WhichOneof("type") in _KEPT_TYPES] if retain_lifecycle_msgs else []
        original(self, retain_lifecycle_msgs=retain_lifecycle_msgs, fragment_ids_this_run=fragment_ids_this_run)
        if kept:
            self._queue.extend(kept)

    clear._fewshot_keeps_upload_answers = True  # type: ignore[attr-defined]
    clear._fewshot_original = original  # type: ignore[attr-defined]
    clear.__doc__ = original.__doc__
    ForwardMsgQueue.clear = clear
    return True


def _headers_only(dist: Any) -> Any:
    """``dist`` whose ``metadata`` is parsed from the header block of its METADATA file only."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    head = text.split("\n\n", 1)[0] + "\n"  # headers end at the first blank line; the body is the description
    headers = email.parser.HeaderParser().parsestr(head)
    return SimpleNamespace(name=headers.get("Name") or dist.name, metadata=headers)


def read_component_metadata_headers_only() -> bool:
    """Make Streamlit's component-package filter read metadata headers only (see the module docstring).

    Returns whether the patch is (now) in place; nothing is patched when Streamlit's internals differ.
    """
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # pragma: no cover - another Streamlit layout
        return False
    original = getattr(manifest_scanner, "_is_likely_streamlit_component_package", None)
    if original is None:  # pragma: no cover - another Streamlit layout
        return False
    if getattr(original, "_fewshot_headers_only", False):
        return True

    def is_likely(dist: Any) -> bool:
        try:
            return original(_headers_only(dist))
        except Exception:  # an odd distribution: let Streamlit's own filter decide, as it would have
            return original(dist)

    is_likely._fewshot_headers_only = True  # type: ignore[attr-defined]
    is_likely._fewshot_original = original  # type: ignore[attr-defined]
    is_likely.__doc__ = original.__doc__
    manifest_scanner._is_likely_streamlit_component_package = is_likely
    return True
