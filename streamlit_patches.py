"""One fix to Streamlit 1.67 that the lab needs under load; applied by ``app.py`` before anything else.

**Uploads lost when a script run starts.** To upload a file the browser first asks the server for upload URLs
(a ``file_urls_request``); the answer (``file_urls_response``) waits in the session's outgoing message queue
until the server flushes it. When a script run starts, Streamlit clears that queue, keeping only lifecycle
messages (``ForwardMsgQueue.clear(retain_lifecycle_msgs=True)``), so an answer still waiting there is dropped
and the browser waits for it forever: the file never arrives and the user sees nothing happen. On an idle
machine the window is a few microseconds; with 20 sessions on two cores (``benchmarks/load_test.py``) the
queue is flushed late and 8 of 20 sessions that dropped a query file right after renaming a class lost it.
The patch keeps those answers through the clear (they belong to no script run).
"""

from __future__ import annotations

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
